// DTP flow 1-2: a Primero caseworker's decision on a proGres referral → the
// body posted to DTP ReceiveDecisionOutgoingReferral (spec domain.md §1.A
// "Flow 1-2", §4.7, examples 06 → 07).
//
// Record bundle (one per service of a changed case, see lib/decisions.js):
//   { "case": { "id", "case_id", "owned_by", "last_updated_at" }, "service": { … } }
// Emits, for a decided service:
//   { "service_id", "intervention_number",
//     "decision": { "status", "closure_reason" },   // what identifies the decision (the host fingerprints it)
//     "body": { case_id, primero_user, progres_interventionnumber, status, closure_reason, request_type } }
// Skips (code `not-a-decision`) services without a decision.
//
// progres_interventionnumber is the number part of what the service holds
// (a service created through PING holds the composite
// "<number>,<lpinterventionid>,<businessunit>"; DTP knows the number only).
// Better than the original: an unknown status is `unmapped` instead of being
// sent as "Pending Acknowledgement"; a service without an intervention
// number is `bad-input` instead of a body proGres cannot match.
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { OUTBOUND_DECISION_TABLE, primeroDecision } from '../lib/decisions.js';

const REQUEST_TYPE = 'ReceiveDecisionOutgoingReferral';

export const { describe, configure, run, runBatch } = defineJob({
  name: 'dtp-1.2',
  version: '0.1.0',
  flow: 'dtp-1.2',
  tables: [OUTBOUND_DECISION_TABLE],

  map(bundle, { tables }) {
    const found = primeroDecision(bundle, tables);
    if (found.skip) return found.skip;
    const d = found.decision;

    const number = (d.interventionNumber ?? '').split(',')[0].trim();
    if (!number) {
      throw badInput('service.progres_interventionnumber', 'required field missing or empty: proGres cannot match the decision without it');
    }
    return emit({
      service_id: d.serviceId,
      intervention_number: number,
      decision: { status: d.status, closure_reason: d.closureReason },
      body: {
        case_id: d.caseId,
        primero_user: d.owner,
        progres_interventionnumber: number,
        status: d.status,
        closure_reason: d.closureReason,
        request_type: REQUEST_TYPE,
      },
    });
  },
});
