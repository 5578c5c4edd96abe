// PING workflow 1.2: a Primero caseworker's decision on a proGres referral →
// the SHP-2748 transfer-status record for the intervention (spec domain.md
// §1.B "Workflow 1.2", §3.2, example 17).
//
// Record bundle (one per service of a changed case, see lib/decisions.js):
//   { "case": { "id", "case_id", "owned_by", "last_updated_at" }, "service": { … } }
// Emits, for a decided service:
//   { "service_id", "intervention_id",
//     "decision": { "status", "closure_reason" },   // what identifies the decision (the host fingerprints it)
//     "record": { "ExternalId", "Attachments", "Fields" } }  // the SHP-2748 ingestion record
// Skips (code `not-a-decision`) services without a decision.
//
// Better than the original: a service whose progres_interventionnumber is not
// the composite "<number>,<lpinterventionid>,<businessunit>" (created before
// workflow 1.1 wrote it) is a `bad-input` error the host reports, not a
// silent drop; an unknown status is `unmapped` instead of the "unknown"
// transfer status 125080001.
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { lookup } from '../lib/mapping.js';
import { valuedFields } from '../lib/fields.js';
import { OUTBOUND_DECISION_TABLE, primeroDecision } from '../lib/decisions.js';

const T_TRANSFER_STATUS = 'decision-transfer-status';

/** [lpinterventionid, businessunit] of a composite intervention number, or null. */
function compositeIds(number) {
  const parts = (number ?? '').split(',').map((p) => p.trim());
  if (parts.length !== 3 || !parts[1] || !parts[2]) return null;
  return [parts[1], parts[2]];
}

export const { describe, configure, run, runBatch } = defineJob({
  name: 'ping-1.2',
  version: '0.1.0',
  flow: 'ping-1.2',
  tables: [OUTBOUND_DECISION_TABLE, T_TRANSFER_STATUS],

  map(bundle, { ctx, tables }) {
    const found = primeroDecision(bundle, tables);
    if (found.skip) return found.skip;
    const d = found.decision;

    const ids = compositeIds(d.interventionNumber);
    if (!ids) {
      throw badInput(
        'service.progres_interventionnumber',
        'legacy intervention number: not the composite number,lpinterventionid,businessunit '
          + 'that workflow 1.1 writes, so proGres cannot be told; '
          + 'update the service in Primero or the intervention in proGres by hand',
      );
    }
    const [lpInterventionId, businessUnit] = ids;
    const transferStatus = lookup(tables, T_TRANSFER_STATUS, d.status);

    const comment = `Referral ${d.status} by PRIMERO${d.hasReason ? `: ${d.closureReason}` : ''}`;
    const record = {
      ExternalId: d.caseId,
      Attachments: [{ Comment: comment }],
      // A case without an owner leaves progres_primerocaseworker out: a null
      // would blank the caseworker proGres already holds.
      Fields: valuedFields([
        { Name: 'progres_lpinterventionid', Value: lpInterventionId },
        { Name: 'progres_businessunit', Value: businessUnit },
        { Name: 'progres_primerotransferstatus', Value: transferStatus },
        { Name: 'progres_primerotransferstatusdate', Value: ctx.today },
        { Name: 'progres_primeroid', Value: d.caseId },
        { Name: 'progres_primerocaseworker', Value: d.owner },
      ]),
    };
    return emit({
      service_id: d.serviceId,
      intervention_id: lpInterventionId,
      decision: { status: d.status, closure_reason: d.closureReason },
      record,
    });
  },
});
