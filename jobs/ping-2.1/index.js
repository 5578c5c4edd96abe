// PING workflow 2.1: a Primero service referred to UNHCR → one SHP-2731 async
// ingestion record, an interoperability referral in proGres (spec domain.md
// §1.B "Workflow 2.1", §4.3, §4.4, §4.6, §4.11, example 18).
//
// Record bundle: see ../lib/outbound-referral.js. Emits
//   { service_id, referral_id, referred_at, admin_contact: [fields],
//     record: { ExternalId, ExternalGUID, Fields: [{Name, Value}, …] } }
// or skips with `not-referred` when the service is not a new UNHCR referral.
// The host wraps `record` in the SHP-2731 envelope and checks its status.
import { defineJob, emit } from '../lib/job.js';
import { fatal } from '../lib/errors.js';
import { isListed, lookup } from '../lib/mapping.js';
import { text, valuedFields } from '../lib/fields.js';
import {
  DEFAULT_REFERRAL_NOTES, adminContact, asText, caseIds, dateOfBirth, envelope, notReferred,
  referralDate, referrerContact, selectReferral,
} from '../lib/outbound-referral.js';

const T_SERVICE = 'outbound-service-guids';
const T_CONCERN = 'protection-concern-categories';
const T_SEX = 'outbound-sex-ping';

// The referring organisation's label in proGres (§4.11: a constant of the
// original, not a deployment id).
const ORG_REFERRED_BY = 'Primero CP';

/** Category GUID of the first protection concern the table lists, else null (§4.4). */
function needCategory(tables, concerns) {
  const list = Array.isArray(concerns) ? concerns : [];
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (isListed(tables, T_CONCERN, c)) return lookup(tables, T_CONCERN, c);
  }
  return null;
}

export const { describe, configure, run, runBatch } = defineJob({
  name: 'ping-2.1',
  version: '0.1.0',
  flow: 'ping-2.1',
  tables: [T_SERVICE, T_CONCERN, T_SEX],

  setup({ deployment }) {
    const businessUnit = text(deployment.business_unit);
    const organisationFrom = text(deployment.organisation_from);
    if (!businessUnit) throw fatal('deployment.business_unit is not set');
    if (!organisationFrom) throw fatal('deployment.organisation_from is not set');
    return { businessUnit, organisationFrom, admin: adminContact(deployment, ['position', 'email', 'phone']) };
  },

  map(bundle, { tables, settings }) {
    const selected = selectReferral(bundle);
    if (!selected) return notReferred();
    const { kase, service, referral } = selected;
    const { id, caseId } = caseIds(kase);
    const serviceId = text(service.unique_id);

    // Checks and lookups first, so a bad record fails before anything else.
    const requested = lookup(tables, T_SERVICE, service.service_type);
    const sex = lookup(tables, T_SEX, kase.sex);
    const birth = dateOfBirth(kase);
    const referred = referralDate(referral);
    const { values: contact, adminFields } = referrerContact(bundle.owner, settings.admin);

    // Name/Value objects written out (no pairs mapped by a callback: the
    // component's interpreter pays for every callback and destructuring).
    const fields = [
      { Name: 'progres_externalguid', Value: id },
      { Name: 'progres_externalid', Value: caseId },
      { Name: 'progres_businessunit', Value: settings.businessUnit },
      { Name: 'progres_organizationfrom', Value: settings.organisationFrom },
      { Name: 'progres_orgreferredby', Value: ORG_REFERRED_BY },
      { Name: 'progres_orgposition', Value: contact.position },
      { Name: 'progres_orgemail', Value: contact.email },
      { Name: 'progres_orgphonenumber', Value: contact.phone },
      { Name: 'progres_orgreferralid', Value: serviceId },
      { Name: 'progres_referraldate', Value: referred },
      { Name: 'progres_otherrequestedservices', Value: text(service.service_type_other) },
      { Name: 'progres_requestedservice', Value: requested },
      { Name: 'progres_spneedcategory', Value: needCategory(tables, kase.protection_concerns) },
      { Name: 'progres_reasonforreferral', Value: text(service.service_referral_notes) ?? DEFAULT_REFERRAL_NOTES },
      { Name: 'progres_pocphonenumber', Value: asText(kase.telephone_current) },
      { Name: 'progres_pocaddress', Value: text(kase.address_current) },
      { Name: 'progres_pocotheridnumber', Value: text(kase.unhcr_id_no) },
      { Name: 'progres_pocdateofbirth', Value: birth },
      { Name: 'progres_pocsex', Value: sex },
      { Name: 'progres_poclastname', Value: text(kase.name_last) },
      { Name: 'progres_pocmiddlename', Value: text(kase.name_middle) },
      { Name: 'progres_pocfirstname', Value: text(kase.name_first) },
      { Name: 'progres_unhcrid', Value: text(kase.unhcr_individual_no) ?? text(kase.unhcr_id_no) },
      // Read back by workflow 2.2 as the Primero case key.
      { Name: 'progres_offlineid', Value: caseId },
    ];

    const out = envelope(selected, adminFields);
    // Fields without a value are left out (the original's undefined values).
    out.record = { ExternalId: caseId, ExternalGUID: id, Fields: valuedFields(fields) };
    return emit(out);
  },
});
