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
import { badInput } from '../lib/errors.js';
import { text } from '../lib/fields.js';
import { INBOUND_TABLES, inboundSettings, mapInboundReferral, personRequired } from '../lib/inbound-referral.js';

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
  // SHP-2747 rows as OpenFn/ping-primero's sample shows them name the
  // intervention only here (no progres_lpinterventionid).
  deliveryIntervention: 'progres_intervention',
  businessUnit: 'progres_businessunit',
  transferStatusDate: 'progres_primerotransferstatusdate',
  startDate: 'progres_interventionstartdate',
  description2: 'progres_interventiondescription',
  reason: 'progres_reasonforreferral',
  primeroId: 'progres_primeroid',
  userTitle: 'systemuser.title',
  userPhone: 'systemuser.su.mobilephone',
  userEmail: 'systemuser.su.internalemailaddress',
  // Location keys are inherited from DTP rows; likely absent in PING rows.
  addressPrefixes: ['progres_individual.individuals.', 'individuals.'],
};

// Spec §1.A step 2 (all seven, empty counts as missing), then the parts of the
// composite intervention number that workflow 1.2 needs to write back.
const REQUIRED = [...personRequired(K), K.interventionNumber, K.lpInterventionId, K.businessUnit];

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export const { describe, configure, run, runBatch } = defineJob({
  name: 'ping-1.1',
  version: '0.1.0',
  flow: 'ping-1.1',
  tables: INBOUND_TABLES,

  setup({ deployment }) {
    return inboundSettings(deployment);
  },

  map(bundle, env) {
    if (!isObject(bundle)) throw badInput('record', 'record bundle must be a JSON object');
    if (!isObject(bundle.intervention)) throw badInput('intervention', 'bundle has no SHP-2358 intervention row');
    const delivery = isObject(bundle.delivery) ? bundle.delivery : {};
    if (bundle.languages !== undefined && bundle.languages !== null && !Array.isArray(bundle.languages)) {
      throw badInput('languages', 'must be a list of language names');
    }
    // The flat view checked and read below: the intervention row (parsed for
    // this call only, so it is completed in place rather than copied), with
    // the two delivery-row values the composite intervention number needs.
    // The intervention id is the one the host fetched the details with and
    // acknowledges: the delivery's progres_lpinterventionid, else its
    // progres_intervention (flows/ping_referral_to_primero.rs reads the same).
    const row = bundle.intervention;
    row[K.lpInterventionId] = text(delivery[K.lpInterventionId])
      ?? text(delivery[K.deliveryIntervention])
      ?? text(row[K.lpInterventionId]);
    row[K.businessUnit] = text(row[K.businessUnit]) ?? text(delivery[K.businessUnit]);

    const payload = mapInboundReferral(row, K, env, {
      required: REQUIRED,
      languageNames: bundle.languages ?? (text(row[K.language]) ? [row[K.language]] : []),
      responseDayTimeKey: K.transferStatusDate,
      appointmentDateKey: K.startDate,
      requestAgency: 'UNHCR',
      serviceInterventionNumber: `${text(row[K.interventionNumber])},${row[K.lpInterventionId]},${row[K.businessUnit]}`,
      caseId: text(row[K.primeroId]) ?? text(delivery[K.primeroId]),
    });

    return emit(payload);
  },
});
