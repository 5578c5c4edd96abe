// Referral decisions, shared by the decision jobs of both designs:
//
// - outbound (Primero caseworker decision on a proGres referral → proGres):
//   PING workflow 1.2 (`ping-1.2`) and DTP flow 1-2
//   (`dtp-1.2`) read the decision off one Primero service the
//   same way (spec domain.md §1.A "Flow 1-2" steps 2–3, §4.7) and differ only
//   in the wire format they build from it;
// - inbound (proGres decision on a Primero referral → Primero referral
//   status): PING workflow 2.2 and DTP flow 2-3 both map a proGres code to a
//   Primero referral status through a mapping table.
//
// Record bundle of the outbound jobs, built by the host per service of a
// changed case (only these case fields; the service as Primero holds it):
//   { "case": { "id", "case_id", "owned_by", "last_updated_at" }, "service": { … } }
import { skip } from './job.js';
import { badInput, fatal } from './errors.js';
import { lookup } from './mapping.js';
import { text } from './fields.js';

/** Primero unhcr_referral_status → decision status ("acknowledged" | "rejected"). */
export const OUTBOUND_DECISION_TABLE = 'outbound-decision-status';

/** Skip code of a service that carries no decision to send; the host does not report these. */
export const NOT_A_DECISION = 'not-a-decision';

/** closure_reason when the caseworker gave none (spec §4.12). */
export const NO_REASON = 'No reason specified.';

/** Statuses meaning "not decided yet": "pending" is what workflow/flow 1.1 writes. */
const UNDECIDED = new Set(['pending']);

/** The only Primero referral statuses a proGres decision may set (spec §2.4). */
const REFERRAL_DECISIONS = new Set(['accepted', 'rejected']);

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * The decision on one Primero service, or a `skip` outcome (code
 * NOT_A_DECISION) when the service is not a decided referral from proGres.
 *
 * A service is a decision when its own service_request_agency is exactly
 * "UNHCR" (spec §5.6), it is an external referral, and unhcr_referral_status
 * is set and not "pending". The original kept a case when *some* service
 * matched the agency and then sent every decided external service of it; a
 * service that proGres did not refer has no intervention to write back to,
 * so the agency is checked per service here.
 *
 * Throws `unmapped` for a status outside OUTBOUND_DECISION_TABLE (the
 * original silently dropped it) and `bad-input` when ids are missing.
 *
 * Returns { caseRecordId, caseId, owner, serviceId, status, closureReason,
 * hasReason, interventionNumber } (interventionNumber as stored: plain or
 * composite, or null).
 */
export function primeroDecision(bundle, tables) {
  if (!isObject(bundle)) throw badInput('record', 'record bundle must be a JSON object');
  if (!isObject(bundle.case)) throw badInput('case', 'bundle has no case');
  if (!isObject(bundle.service)) throw badInput('service', 'bundle has no service');
  const kase = bundle.case;
  const service = bundle.service;

  if (text(service.service_request_agency) !== 'UNHCR') {
    return { skip: skip(NOT_A_DECISION, 'service was not referred by UNHCR') };
  }
  if (text(service.service_referral) !== 'external_referral') {
    return { skip: skip(NOT_A_DECISION, 'service is not an external referral') };
  }
  const primeroStatus = text(service.unhcr_referral_status);
  if (primeroStatus === null || UNDECIDED.has(primeroStatus)) {
    return { skip: skip(NOT_A_DECISION, 'no decision yet') };
  }
  const status = lookup(tables, OUTBOUND_DECISION_TABLE, primeroStatus);

  const serviceId = text(service.unique_id);
  if (serviceId === null) throw badInput('service.unique_id', 'required field missing or empty');
  const caseId = text(kase.case_id);
  if (caseId === null) throw badInput('case.case_id', 'required field missing or empty');

  const reason = text(service.unhcr_referral_rejection_reason);
  const closureReason = reason ?? NO_REASON;
  return {
    decision: {
      caseRecordId: text(kase.id),
      caseId,
      owner: text(kase.owned_by),
      serviceId,
      status,
      closureReason,
      // The PING comment leaves out the default text (spec §1.B "Workflow 1.2" step 4).
      hasReason: closureReason !== NO_REASON,
      interventionNumber: text(service.progres_interventionnumber),
    },
  };
}

/**
 * The Primero referral status for a proGres code, through `table`. An
 * unlisted code is `unmapped` (the originals turned unknown codes into
 * "accepted" or passed them through raw); a table mapping to anything but a
 * referral decision is a configuration error.
 */
export function referralStatus(tables, table, code) {
  const status = lookup(tables, table, code);
  if (!REFERRAL_DECISIONS.has(status)) {
    throw fatal(`mapping table ${table} maps a code to ${status}, which is not a referral decision: accepted, rejected`);
  }
  return status;
}
