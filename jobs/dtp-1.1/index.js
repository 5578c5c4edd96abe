// DTP flow 1-1: one proGres referral (intervention) pushed by DTP → the
// Primero case body and the one new service (spec domain.md §1.A "Flow 1-1",
// §4.9 design A column). The mapping itself is shared with PING workflow 1.1
// (lib/inbound-referral.js); this file holds the DTP row's keys and the
// design A differences.
//
// Record: one intervention of the message, as the host groups it:
//   { "intervention": <its first row>, "languages": ["French", "English"] }
// DTP sends one `interventions` row per language of an intervention (a
// FetchXML join; OpenFn/primero-progres sampleData/flow1__progresReferralToUNICEF.json),
// so one service carries the languages of all its rows. A plain row (one
// element of `interventions`, e.g. with `bridge job run`) is an intervention
// with its one language. A row is a flattened Dynamics FetchXML row
// (example 01): own attributes plain, linked entities prefixed
// (`individuals.`, `user.`, `languages.`, `interventiontype.` …), lookups as
// objects {Id, KeyAttributes, LogicalName, Name, RowVersion}.
// Emits:
//   { "unhcr_individual_no": "…", "intervention_number": "…", "case": { …, "services_section": [service] } }
// The host decides create vs append (idempotency on `intervention_number`)
// and notifies DTP (flows 1-3 / 1-4).
import { defineJob, emit } from '../lib/job.js';
import { badInput } from '../lib/errors.js';
import { text } from '../lib/fields.js';
import {
  INBOUND_TABLES, flattenLookups, inboundSettings, mapInboundReferral, personRequired,
} from '../lib/inbound-referral.js';

// DTP row keys (design A column of §4.9).
const K = {
  description: 'interventiontype.progres_description',
  individualId: 'individuals.progres_id',
  // A lookup object; its Name is the registration group number (unhcr_id_no).
  registrationGroup: 'individuals.progres_registrationgroupid',
  registrationGroupName: 'individuals.progres_registrationgroupid',
  givenName: 'individuals.progres_givenname',
  middleName: 'individuals.progres_middlename',
  familyName: 'individuals.progres_familyname',
  nickname: 'individuals.progres_commonyusedname',
  dateOfBirth: 'individuals.progres_dateofbirth',
  sex: 'individuals.progres_sex',
  phone: 'individuals.progres_primaryphonenumber',
  language: 'languages.progres_languagecodeid',
  interventionNumber: 'progres_interventionnumber',
  lpInterventionId: 'progres_lpinterventionid',
  startDate: 'progres_interventionstartdate',
  description2: 'progres_interventiondescription',
  reason: 'progres_reasonforreferral',
  primeroId: 'progres_primeroid',
  userTitle: 'user.title',
  userPhone: 'user.mobilephone',
  userEmail: 'user.internalemailaddress',
  userPartner: 'user.progres_partner',
  addressPrefixes: ['individuals.'],
};

// The seven of §1.A step 2, then the intervention number: DTP's notifications
// (flows 1-3/1-4) and the idempotency check both need it.
const REQUIRED = [...personRequired(K), K.interventionNumber];

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export const { describe, configure, run, runBatch } = defineJob({
  name: 'dtp-1.1',
  version: '0.1.0',
  flow: 'dtp-1.1',
  tables: INBOUND_TABLES,

  setup({ deployment }) {
    // Design A always sets the owner: the intake user, from the mapping folder.
    return inboundSettings(deployment, { requireIntakeUser: true });
  },

  map(record, env) {
    if (!isObject(record)) throw badInput('record', 'intervention must be a JSON object');
    const grouped = isObject(record.intervention);
    if (grouped && record.languages !== undefined && record.languages !== null && !Array.isArray(record.languages)) {
      throw badInput('languages', 'must be a list of language names');
    }
    // Lookup objects are read by their Name, so an empty Name counts as missing.
    const row = flattenLookups(grouped ? record.intervention : record);

    const payload = mapInboundReferral(row, K, env, {
      required: REQUIRED,
      languageNames: grouped ? (record.languages ?? []) : [row[K.language]],
      responseDayTimeKey: K.startDate,
      // Design A: the partner organisation of the proGres user, else UNHCR.
      requestAgency: text(row[K.userPartner]) ?? 'UNHCR',
      // Design A stores the plain intervention number (no composite).
      serviceInterventionNumber: text(row[K.interventionNumber]),
      caseId: text(row[K.primeroId]),
    });

    return emit(payload);
  },
});
