// PING workflow 1.1: a proGres referral (intervention) → the Primero case body
// and the one new service (spec domain.md §1.B "Workflow 1.1", §4.9 design B).
//
// Record bundle (built by the host after de-duplicating the SHP-2358 join rows):
//   { "delivery":       { …SHP-2747 row… },
//     "intervention":   { …first SHP-2358 row of the intervention… },
//     "languages":      ["Nuer", "Swahili"],            // distinct language names
//     "specific_needs": [{ category, subcategory, … }] } // collected, not sent to Primero
// Emits:
//   { "unhcr_individual_no": "…", "intervention_number": "…", "case": { …, "services_section": [service] } }
// The host decides create vs append (idempotency on `intervention_number`).
import { defineJob, emit } from '../lib/job.js';
import { badInput, fatal } from '../lib/errors.js';
import { lookup, lookupDistinct } from '../lib/mapping.js';
import { requireFields, text, firstText } from '../lib/fields.js';
import { joinText } from '../lib/html.js';
import { datePart, isoDateTime, wholeYears } from '../lib/dates.js';

const T_SERVICE = 'inbound-service-types';
const T_LANGUAGE = 'inbound-languages';
const T_SEX = 'inbound-sex';

// SHP-2358 keys (PING column of §4.9).
const K = {
  description: 'progres_interventiontype2.interventiontype.progres_description',
  individualId: 'progres_individual.individuals.progres_id',
  registrationGroup: 'progres_individual.individuals.progres_registrationgroupid',
  registrationGroupName: 'progres_individual.progres_registrationgroupidname',
  givenName: 'progres_individual.individuals.progres_givenname',
  middleName: 'progres_individual.individuals.progres_middlename',
  familyName: 'progres_individual.individuals.progres_familyname',
  nickname: 'progres_individual.individuals.progres_commonyusedname',
  dateOfBirth: 'progres_individual.individuals.progres_dateofbirth',
  sex: 'progres_individual.individuals.progres_sex',
  phone: 'progres_individual.individuals.progres_primaryphonenumber',
  language: 'progres_language.progres_languagecodeidname',
  interventionNumber: 'progres_interventionnumber',
  lpInterventionId: 'progres_lpinterventionid',
  businessUnit: 'progres_businessunit',
  transferStatusDate: 'progres_primerotransferstatusdate',
  startDate: 'progres_interventionstartdate',
  description2: 'progres_interventiondescription',
  reason: 'progres_reasonforreferral',
  primeroId: 'progres_primeroid',
  userTitle: 'systemuser.title',
  userPhone: 'systemuser.su.mobilephone',
  userEmail: 'systemuser.su.internalemailaddress',
};

// Spec §1.A step 2 (all seven, empty counts as missing), then the parts of the
// composite intervention number that workflow 1.2 needs to write back.
const REQUIRED = [
  K.description, K.individualId, K.registrationGroup, K.givenName, K.familyName, K.dateOfBirth, K.sex,
  K.interventionNumber, K.lpInterventionId, K.businessUnit,
];

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Address: `.Name` (or the plain string) of location levels 1–6, non-empty, joined by a space; else null. */
function address(row) {
  const parts = [];
  for (let n = 1; n <= 6; n++) {
    const v = row[`progres_individual.individuals.progres_coalocationlevel${n}`] ?? row[`individuals.progres_coalocationlevel${n}`];
    const name = isObject(v) ? text(v.Name) : text(v);
    if (name) parts.push(name);
  }
  return parts.length ? parts.join(' ') : null;
}

export const { describe, configure, run } = defineJob({
  name: 'progres-referral-to-primero',
  version: '0.1.0',
  flow: 'ping-1.1',
  tables: [T_SERVICE, T_LANGUAGE, T_SEX],

  setup({ deployment }) {
    const moduleId = text(deployment.module_id);
    if (!moduleId) throw fatal('deployment.module_id is not set');
    return { moduleId, intakeUser: text(deployment.intake_user) };
  },

  map(bundle, { ctx, tables, settings, log }) {
    if (!isObject(bundle)) throw badInput('(record)', 'record bundle must be a JSON object');
    if (!isObject(bundle.intervention)) throw badInput('intervention', 'bundle has no SHP-2358 intervention row');
    const delivery = isObject(bundle.delivery) ? bundle.delivery : {};
    if (bundle.languages !== undefined && bundle.languages !== null && !Array.isArray(bundle.languages)) {
      throw badInput('languages', 'must be a list of language names');
    }
    const iv = bundle.intervention;
    // The flat view checked and read below: the intervention row, plus the two
    // delivery-row values the composite intervention number needs.
    const row = {
      ...iv,
      [K.lpInterventionId]: firstText(delivery, [K.lpInterventionId]) ?? text(iv[K.lpInterventionId]),
      [K.businessUnit]: text(iv[K.businessUnit]) ?? text(delivery[K.businessUnit]),
    };
    const interventionId = row[K.lpInterventionId] ?? undefined;

    requireFields(row, REQUIRED);

    // Service-type gate (§4.1): only the listed types; no default → unmapped.
    const serviceType = lookup(tables, T_SERVICE, text(row[K.description]));

    const dateOfBirth = datePart(String(row[K.dateOfBirth]));
    if (!dateOfBirth) throw badInput(K.dateOfBirth, 'not an ISO date (YYYY-MM-DD…)');
    const age = wholeYears(dateOfBirth, ctx.today);
    if (age === null) throw fatal('context.today is not a YYYY-MM-DD date');
    if (age < 0) throw badInput(K.dateOfBirth, 'date of birth is after today');

    const dateField = (key, convert, what) => {
      if (text(row[key]) === null) return null;
      const v = convert(String(row[key]));
      if (v === null) throw badInput(key, `not an ISO ${what}`);
      return v;
    };
    const responseDayTime = dateField(K.transferStatusDate, isoDateTime, 'date or date-time');
    const appointmentDate = dateField(K.startDate, datePart, 'date');

    const sex = lookup(tables, T_SEX, text(row[K.sex]));

    const languageNames = bundle.languages ?? (text(row[K.language]) ? [row[K.language]] : []);
    const language = lookupDistinct(tables, T_LANGUAGE, languageNames);

    const interventionNumber = text(row[K.interventionNumber]);
    const service = {
      service_response_day_time: responseDayTime,
      service_appointment_date: appointmentDate,
      service_request_external: true,
      service_request_title: text(row[K.userTitle]) ?? '',
      service_request_agency: 'UNHCR',
      service_request_phone: text(row[K.userPhone]),
      service_request_email: text(row[K.userEmail]),
      service_referral_notes: joinText([row[K.description2], row[K.reason]], ', '),
      service_type: serviceType,
      service_implementing_agency: 'UNICEF',
      service_response_type: 'service_provision',
      service_referral: 'external_referral',
      unhcr_referral_status: 'pending',
      progres_interventionnumber: `${interventionNumber},${row[K.lpInterventionId]},${row[K.businessUnit]}`,
    };

    const individualNo = text(row[K.individualId]);
    const kase = {
      services_section: [service],
      unhcr_individual_no: individualNo,
      unhcr_id_no: text(row[K.registrationGroupName]),
      name_first: text(row[K.givenName]),
      name_middle: text(row[K.middleName]),
      name_last: text(row[K.familyName]),
      name_nickname: text(row[K.nickname]),
      date_of_birth: dateOfBirth,
      age,
      sex,
      telephone_current: text(row[K.phone]),
      address_current: address(row),
      language,
      status: 'open',
    };
    const caseId = firstText(iv, [K.primeroId]) ?? firstText(delivery, [K.primeroId]);
    if (caseId) kase.case_id = caseId;
    if (settings.intakeUser) kase.owned_by = settings.intakeUser;
    kase.module_id = settings.moduleId;

    log('info', 'mapped proGres referral', { intervention_id: interventionId });
    return emit({ unhcr_individual_no: individualNo, intervention_number: interventionNumber, case: kase });
  },
});
