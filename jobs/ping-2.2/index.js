// PING workflow 2.2: a proGres decision on a Primero referral (one SHP-2796
// detail row) → the Primero referral decision and the SHP-2284 "synced"
// record (spec domain.md §1.B "Workflow 2.2" steps 3 and 5, example 20).
//
// Record: the SHP-2796 row (Data[0]) as PING returns it.
// Emits:
//   { "interop_referral_id", "case_id" (Primero case_id = progres_offlineid),
//     "service_id" (full service unique_id = progres_orgreferralid),
//     "status": "accepted" | "rejected", "rejected_reason": "…" | null,
//     "synced": { "ExternalId", "Attachments": [], "Fields" } }   // sent only once Primero holds the decision
// The host finds the case and the referral whose service_record_id equals
// service_id exactly, and sends `synced` only after the referral is updated.
//
// Better than the original: an unknown status code is `unmapped` (the
// original's statusText made it "accepted"); progres_reviewdecision, read
// only when the row has no status, has its own table with the proGres
// review-decision meaning (the original took 125080001 for an acceptance).
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { requireFields, text } from '../lib/fields.js';
import { referralStatus } from '../lib/decisions.js';

const T_STATUS = 'inbound-decision-status';
const T_REVIEW = 'inbound-review-decision';

const K = {
  id: 'progres_interoperabilityreferralid',
  status: 'progres_interoperabilityreferralstatus',
  review: 'progres_reviewdecision',
  caseId: 'progres_offlineid',
  serviceId: 'progres_orgreferralid',
  // proGres spellings (spec README: copy exactly).
  reasonName: 'progres_interoperabiltyreferralrejectionreasonname',
  comment: 'progres_interoperabilityreferralrejectionomment',
};

// proGres "Synced with PRIMERO" status and the comment written with it (spec §3.2, example 20).
const SYNCED_STATUS = '125080003';
const SYNCED_COMMENT = 'Referral decision synced with PRIMERO via OpenFn';
// Parts of rejected_reason when proGres gave none (spec §1.B "Workflow 2.2" step 3).
const NO_REASON = 'Rejected in proGres (no reason provided)';
const NO_COMMENT = 'No comment provided';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export const { describe, configure, run, runBatch } = defineJob({
  name: 'ping-2.2',
  version: '0.1.0',
  flow: 'ping-2.2',
  tables: [T_STATUS, T_REVIEW],

  map(row, { tables }) {
    if (!isObject(row)) throw badInput('record', 'record must be the SHP-2796 row, a JSON object');
    requireFields(row, [K.id, K.caseId, K.serviceId]);

    const statusCode = text(row[K.status]);
    const reviewCode = text(row[K.review]);
    let status;
    if (statusCode !== null) status = referralStatus(tables, T_STATUS, statusCode);
    else if (reviewCode !== null) status = referralStatus(tables, T_REVIEW, reviewCode);
    else throw badInput(K.status, `required field missing or empty, and no ${K.review}`);

    const rejectedReason = status === 'rejected'
      ? `${text(row[K.reasonName]) ?? NO_REASON} — ${text(row[K.comment]) ?? NO_COMMENT}`
      : null;

    const id = text(row[K.id]);
    return emit({
      interop_referral_id: id,
      case_id: text(row[K.caseId]),
      service_id: text(row[K.serviceId]),
      status,
      rejected_reason: rejectedReason,
      synced: {
        ExternalId: id,
        Attachments: [],
        Fields: [
          { Name: K.id, Value: id },
          { Name: K.status, Value: SYNCED_STATUS },
          { Name: 'progres_comments', Value: SYNCED_COMMENT },
        ],
      },
    });
  },
});
