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
import { text } from '../lib/fields.js';
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
  for (const c of Array.isArray(concerns) ? concerns : []) {
    if (isListed(tables, T_CONCERN, c)) return lookup(tables, T_CONCERN, c);
  }
  return null;
}

export const { describe, configure, run } = defineJob({
  name: 'primero-referral-to-progres',
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

    const fields = [
      ['progres_externalguid', id],
      ['progres_externalid', caseId],
      ['progres_businessunit', settings.businessUnit],
      ['progres_organizationfrom', settings.organisationFrom],
      ['progres_orgreferredby', ORG_REFERRED_BY],
      ['progres_orgposition', contact.position],
      ['progres_orgemail', contact.email],
      ['progres_orgphonenumber', contact.phone],
      ['progres_orgreferralid', serviceId],
      ['progres_referraldate', referred],
      ['progres_otherrequestedservices', text(service.service_type_other)],
      ['progres_requestedservice', requested],
      ['progres_spneedcategory', needCategory(tables, kase.protection_concerns)],
      ['progres_reasonforreferral', text(service.service_referral_notes) ?? DEFAULT_REFERRAL_NOTES],
      ['progres_pocphonenumber', asText(kase.telephone_current)],
      ['progres_pocaddress', text(kase.address_current)],
      ['progres_pocotheridnumber', text(kase.unhcr_id_no)],
      ['progres_pocdateofbirth', birth],
      ['progres_pocsex', sex],
      ['progres_poclastname', text(kase.name_last)],
      ['progres_pocmiddlename', text(kase.name_middle)],
      ['progres_pocfirstname', text(kase.name_first)],
      ['progres_unhcrid', text(kase.unhcr_individual_no) ?? text(kase.unhcr_id_no)],
      // Read back by workflow 2.2 as the Primero case key.
      ['progres_offlineid', caseId],
    ].map(([Name, Value]) => ({ Name, Value }));

    return emit({
      ...envelope(selected, adminFields),
      record: { ExternalId: caseId, ExternalGUID: id, Fields: fields },
    });
  },
});
