// proGres referral (intervention) → Primero case body with one new service:
// the mapping both inbound jobs share (spec domain.md §1.A "Flow 1-1" steps
// 1–3, §1.B "Workflow 1.1" step 4, §4.9). A job supplies its own source keys
// (`individuals.…` in DTP rows, `progres_individual.individuals.…` in PING
// rows) and the few values where the designs differ; everything else — the
// order of checks, the error reasons, the case and service shape — is here,
// so the two designs cannot drift apart.
//
//   const payload = mapInboundReferral(row, K, env, {
//     required: [...personRequired(K), K.interventionNumber],
//     languageNames, responseDayTimeKey, appointmentDateKey, requestAgency,
//     serviceInterventionNumber, caseId,
//   });
//   // → { unhcr_individual_no, intervention_number, case }
import { badInput, fatal } from './errors.js';
import { lookup, lookupDistinct } from './mapping.js';
import { requireFields, text } from './fields.js';
import { joinText } from './html.js';
import { datePart, isoDateTime, wholeYears } from './dates.js';

export const T_SERVICE = 'inbound-service-types';
export const T_LANGUAGE = 'inbound-languages';
export const T_SEX = 'inbound-sex';
/** The tables both inbound jobs read. */
export const INBOUND_TABLES = [T_SERVICE, T_LANGUAGE, T_SEX];

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * The seven fields §1.A step 2 requires, in the spec's order. All seven are
 * checked explicitly (the original let a missing date of birth or sex through
 * to a TypeError later).
 */
export function personRequired(K) {
  return [K.description, K.individualId, K.registrationGroup, K.givenName, K.familyName, K.dateOfBirth, K.sex];
}

/**
 * Deployment values both jobs need: `module_id` (required) and the intake
 * user owning cases created from proGres (required when `requireIntakeUser`).
 */
export function inboundSettings(deployment, { requireIntakeUser = false } = {}) {
  const moduleId = text(deployment.module_id);
  if (!moduleId) throw fatal('deployment.module_id is not set');
  const intakeUser = text(deployment.intake_user);
  if (requireIntakeUser && !intakeUser) throw fatal('deployment.intake_user is not set');
  return { moduleId, intakeUser };
}

/** The `Name` of a Dynamics lookup object `{Id, KeyAttributes, LogicalName, Name, RowVersion}`; other values unchanged. */
export function lookupName(value) {
  return isObject(value) ? value.Name ?? null : value;
}

/** A copy of a flattened FetchXML row with every lookup object replaced by its `Name`. */
export function flattenLookups(row) {
  const out = {};
  for (const [k, v] of Object.entries(row)) out[k] = lookupName(v);
  return out;
}

// The keys of location levels 1–6 per prefix list, built once: jobs run in an
// interpreter, where building twelve key strings per record was a fifth of
// the record's cost.
const LEVEL_KEYS = new WeakMap();
function levelKeys(prefixes) {
  let keys = LEVEL_KEYS.get(prefixes);
  if (!keys) {
    keys = [];
    for (let n = 1; n <= 6; n++) keys.push(prefixes.map((p) => `${p}progres_coalocationlevel${n}`));
    LEVEL_KEYS.set(prefixes, keys);
  }
  return keys;
}

/**
 * Address: `.Name` (or the plain string) of location levels 1–6, the first
 * present of `prefixes` per level, non-empty only, joined by a space; else null.
 */
export function locationAddress(row, prefixes) {
  const levels = levelKeys(prefixes);
  let out = null;
  for (let l = 0; l < levels.length; l++) {
    const keys = levels[l];
    for (let k = 0; k < keys.length; k++) {
      const value = row[keys[k]];
      if (value === undefined || value === null) continue;
      const name = text(lookupName(value));
      if (name) out = out === null ? name : `${out} ${name}`;
      break;
    }
  }
  return out;
}

/** An optional date field of `row`: null when empty, `convert`ed, bad-input when malformed. */
function dateField(row, key, convert, what) {
  const value = row[key];
  if (text(value) === null) return null;
  const v = convert(String(value));
  if (v === null) throw badInput(key, `not an ISO ${what}`);
  return v;
}

/**
 * Check and map one intervention row. `K` names the source keys:
 * description, individualId, registrationGroup, registrationGroupName,
 * givenName, middleName, familyName, nickname, dateOfBirth, sex, phone,
 * interventionNumber, description2, reason, userTitle, userPhone, userEmail,
 * plus `addressPrefixes` (list). Order: required fields (bad-input), the
 * service-type gate (unmapped), dates (bad-input), sex (unmapped), languages.
 */
export function mapInboundReferral(row, K, { ctx, tables, settings }, opts) {
  requireFields(row, opts.required);

  // Service-type gate (§4.1): only the listed types; no default → unmapped.
  const serviceType = lookup(tables, T_SERVICE, text(row[K.description]));

  const dateOfBirth = datePart(String(row[K.dateOfBirth]));
  if (!dateOfBirth) throw badInput(K.dateOfBirth, 'not an ISO date: YYYY-MM-DD');
  const age = wholeYears(dateOfBirth, ctx.today);
  if (age === null) throw fatal('context.today is not a YYYY-MM-DD date');
  if (age < 0) throw badInput(K.dateOfBirth, 'date of birth is after today');

  const responseDayTime = dateField(row, opts.responseDayTimeKey, isoDateTime, 'date or date-time');
  const appointmentDate = opts.appointmentDateKey ? dateField(row, opts.appointmentDateKey, datePart, 'date') : undefined;

  const sex = lookup(tables, T_SEX, text(row[K.sex]));
  const language = lookupDistinct(tables, T_LANGUAGE, opts.languageNames ?? []);

  // One literal (no Object.assign): an undefined appointment date is left
  // out by JSON.stringify, as the design without one expects.
  const service = {
    service_response_day_time: responseDayTime,
    service_appointment_date: appointmentDate,
    service_request_external: true,
    service_request_title: text(row[K.userTitle]) ?? '',
    service_request_agency: opts.requestAgency,
    service_request_phone: text(row[K.userPhone]),
    service_request_email: text(row[K.userEmail]),
    service_referral_notes: joinText([row[K.description2], row[K.reason]], ', '),
    service_type: serviceType,
    service_implementing_agency: 'UNICEF',
    service_response_type: 'service_provision',
    service_referral: 'external_referral',
    unhcr_referral_status: 'pending',
    progres_interventionnumber: opts.serviceInterventionNumber,
  };

  const individualNo = text(row[K.individualId]);
  const kase = {
    services_section: [service],
    unhcr_individual_no: individualNo,
    unhcr_id_no: text(lookupName(row[K.registrationGroupName])),
    name_first: text(row[K.givenName]),
    name_middle: text(row[K.middleName]),
    name_last: text(row[K.familyName]),
    name_nickname: text(row[K.nickname]),
    date_of_birth: dateOfBirth,
    age,
    sex,
    telephone_current: text(row[K.phone]),
    address_current: locationAddress(row, K.addressPrefixes),
    language,
    status: 'open',
  };
  if (opts.caseId) kase.case_id = opts.caseId;
  if (settings.intakeUser) kase.owned_by = settings.intakeUser;
  kase.module_id = settings.moduleId;

  return {
    unhcr_individual_no: individualNo,
    intervention_number: text(row[K.interventionNumber]),
    case: kase,
  };
}
