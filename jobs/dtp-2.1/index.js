// DTP flow 2-1 / 2-2 (Gambella): a Primero service referred to UNHCR → the
// `ReceiveIncomingReferral` body posted to DTP (spec domain.md §1.A "Flow
// 2-1 / 2-2", §4.2, §4.5 outbound, §4.6 outbound, §4.10, example 10).
//
// Record bundle: see ../lib/outbound-referral.js. Emits
//   { service_id, referral_id, referred_at, admin_contact: [fields], body: { … } }
// or skips with `not-referred` when the service is not a new UNHCR referral.
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { lookup, lookupDistinct } from '../lib/mapping.js';
import { isMissing, text } from '../lib/fields.js';
import {
  DEFAULT_REFERRAL_NOTES, adminContact, asText, caseIds, dateOfBirth, envelope, notReferred,
  referrerContact, selectReferral,
} from '../lib/outbound-referral.js';

const T_SERVICE = 'outbound-service-labels';
const T_LANGUAGE = 'outbound-languages';
const T_SEX = 'outbound-sex-dtp';

// Constants of the wire format (§1.A request types, §4.12 defaults).
const REQUEST_TYPE = 'ReceiveIncomingReferral';
const UNICEF = 'UNICEF';

/**
 * Language labels joined with ", ". A case without languages is sent as the
 * table's default ("Other" in the original); an unlisted key is the default
 * too, or an unmapped error when the table declares none.
 */
function languages(tables, keys) {
  if (keys !== undefined && keys !== null && !Array.isArray(keys)) throw badInput('language', 'must be a list of language keys');
  const labels = lookupDistinct(tables, T_LANGUAGE, keys ?? []);
  if (labels) return labels.join(', ');
  const fallback = tables[T_LANGUAGE].default;
  return typeof fallback === 'string' ? fallback : null;
}

export const { describe, configure, run, runBatch } = defineJob({
  name: 'dtp-2.1',
  version: '0.1.0',
  flow: 'dtp-2.1',
  tables: [T_SERVICE, T_LANGUAGE, T_SEX],

  setup({ deployment }) {
    return { admin: adminContact(deployment, ['position', 'email', 'phone', 'name']) };
  },

  map(bundle, { tables, settings }) {
    const selected = selectReferral(bundle);
    if (!selected) return notReferred();
    const { kase, service, referral } = selected;
    const { caseId } = caseIds(kase);
    const serviceId = text(service.unique_id);

    const serviceType = lookup(tables, T_SERVICE, service.service_type);
    const sex = isMissing(kase.sex) ? null : lookup(tables, T_SEX, kase.sex);
    const birth = dateOfBirth(kase);
    const language = languages(tables, kase.language);
    const { values: contact, adminFields } = referrerContact(bundle.owner, settings.admin);

    const body = {
      primero_user: text(kase.owned_by),
      position: contact.position,
      email: contact.email,
      phone: contact.phone,
      full_name: contact.name,
      request_type: REQUEST_TYPE,
      service_implementing_agency: UNICEF,
      service_response_day_time: text(service.service_response_day_time),
      service_type: serviceType,
      service_type_other: text(service.service_type_other),
      service_referral_notes: text(service.service_referral_notes) ?? DEFAULT_REFERRAL_NOTES,
      owned_by_agency_id: UNICEF,
      unhcr_individual_no: text(kase.unhcr_individual_no),
      unhcr_id_no: text(kase.unhcr_id_no),
      name_first: text(kase.name_first),
      name_last: text(kase.name_last),
      name_middle: text(kase.name_middle),
      name_nickname: text(kase.name_nickname),
      date_of_birth: birth,
      sex,
      address_current: text(kase.address_current),
      telephone_current: asText(kase.telephone_current),
      language,
      // DTP's correlation id: proGres sends it back with its decision (flow 2-3).
      id: `${caseId}#${serviceId.slice(-12)}`,
    };

    return emit({ ...envelope(selected, adminFields), body });
  },
});
