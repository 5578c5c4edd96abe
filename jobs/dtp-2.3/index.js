// DTP flow 2-3: a proGres decision on a Primero referral, pushed by DTP
// (`PrimeroIncomingReferralDecision`, one item of `interventions`) → the
// Primero referral decision (spec domain.md §1.A "Flow 2-3", §4.7,
// examples 11 → 12).
//
// Record: one item of the message's `interventions` list.
// Emits:
//   { "case_id" (Primero case_id), "service_suffix" (last 12 characters of the service unique_id),
//     "interop_referral_id" (or null), "status": "accepted" | "rejected", "rejected_reason": "…" | null,
//     "mapping_gaps": [{ "table", "code" }]   // only when a rejection reason code is not in the table }
// The host finds the case by case_id and the referral whose
// service_record_id ends with service_suffix, then updates it.
//
// Better than the original: an unknown review decision is `unmapped` (the
// original wrote it into Primero raw); a malformed progres_orgreferralid is
// `bad-input` instead of a search for "undefined". An unknown rejection
// reason code goes as the raw code (as the original), but is reported as a
// mapping gap so the host warns of it: the decision is what matters, and
// holding it back for a reason text would leave the referral open.
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { lookupOrRaw } from '../lib/mapping.js';
import { requireFields, text } from '../lib/fields.js';
import { referralStatus } from '../lib/decisions.js';

const T_DECISION = 'inbound-review-decision';
const T_REASON = 'inbound-rejection-reasons';

// proGres spellings (spec README: copy exactly).
const K = {
  orgReferralId: 'progres_orgreferralid',
  decision: 'progres_reviewdecision',
  reason: 'progres_interoperabiltyreferralrejectionreason',
  comment: 'progres_interoperabilityreferralrejectionomment',
  interopId: 'progres_interoperabilityreferralid',
};

/** Flow 2-2 sends `id = "<case_id>#<last 12 chars of service.unique_id>"` (spec §1.A "Flow 2-1 / 2-2" step 7). */
const SUFFIX_LENGTH = 12;

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export const { describe, configure, run, runBatch } = defineJob({
  name: 'dtp-2.3',
  version: '0.1.0',
  flow: 'dtp-2.3',
  tables: [T_DECISION, T_REASON],

  map(row, { tables }) {
    if (!isObject(row)) throw badInput('record', 'record must be one item of interventions, a JSON object');
    requireFields(row, [K.orgReferralId, K.decision]);

    const parts = text(row[K.orgReferralId]).split('#');
    const [caseId, suffix] = parts.map((p) => p.trim());
    if (parts.length !== 2 || !caseId || suffix.length !== SUFFIX_LENGTH) {
      throw badInput(K.orgReferralId, `not case_id#suffix: the case_id, # and the last ${SUFFIX_LENGTH} characters of the service unique_id`);
    }

    const status = referralStatus(tables, T_DECISION, text(row[K.decision]));
    const reasonCode = text(row[K.reason]);
    const mappedReason = reasonCode === null ? null : lookupOrRaw(tables, T_REASON, reasonCode);
    const reason = mappedReason === null ? null : mappedReason.value;
    const comment = text(row[K.comment]);
    // "<reason>: <comment>" whenever a reason is present, as the original (even on an acceptance).
    const rejectedReason = reason !== null ? (comment !== null ? `${reason}: ${comment}` : reason) : comment;

    const interopId = text(row[K.interopId]);
    const payload = {
      case_id: caseId,
      service_suffix: suffix,
      interop_referral_id: interopId,
      status,
      rejected_reason: rejectedReason,
    };
    if (mappedReason !== null && mappedReason.gap) {
      payload.mapping_gaps = [{ table: T_REASON, code: reasonCode }];
    }
    return emit(payload);
  },
});
