// Primero referral → proGres: what both outbound jobs share (spec domain.md
// §1.A "Flow 2-1 / 2-2", §1.B "Workflow 2.1", §4.10, §4.11): which service of
// a changed case is sent, the referring caseworker's contact with the admin
// fallback, and the case fields both designs read. Each job only lays out its
// own wire format (DTP body or PING Fields list).
//
// Record bundle (one per service of a changed case; the host fetched the
// case's referrals and, when needed, the owner's user profile):
//   { "case":       { …Primero case… },
//     "service_id": "<services_section[].unique_id>",
//     "referrals":  [ …GET /api/v2/cases/:id/referrals rows… ],
//     "since":      "<cursor, ISO date-time>" | null,    // null: first run, no lower bound
//     "owner":      { user_name, full_name, email, phone, position } | null }
import { badInput, fatal } from './errors.js';
import { isMissing, text } from './fields.js';
import { datePart } from './dates.js';
import { skip } from './job.js';

/** Implementing agency of the services sent to proGres (exact, case-sensitive: spec §5.6). */
export const UNHCR_AGENCY = 'UNHCR';
/** Skip code of a service that is not a new UNHCR referral: the host drops it silently. */
export const NOT_REFERRED = 'not-referred';
/** `service_referral_notes` when the caseworker wrote none (§4.12). */
export const DEFAULT_REFERRAL_NOTES = 'Primero referral';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Milliseconds since the epoch of an ISO date-time string, or null. */
function instant(value) {
  if (typeof value !== 'string' || value.trim() === '') return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * The service the bundle names and the referral that makes it new, or null
 * when it is not to be sent. A service is sent when its implementing agency is
 * exactly "UNHCR" and a referral of it (`service_record_id`) was created at or
 * after `since` (spec §1.A 2-1 steps 2–4: a service merely edited is not
 * re-sent). With several such referrals the most recent one counts.
 */
export function selectReferral(bundle) {
  if (!isObject(bundle)) throw badInput('record', 'record bundle must be a JSON object');
  const kase = bundle.case;
  if (!isObject(kase)) throw badInput('case', 'bundle has no Primero case');
  const serviceId = text(bundle.service_id);
  if (!serviceId) throw badInput('service_id', 'bundle names no service');
  if (bundle.referrals !== undefined && bundle.referrals !== null && !Array.isArray(bundle.referrals)) {
    throw badInput('referrals', 'must be a list of referrals');
  }
  const services = Array.isArray(kase.services_section) ? kase.services_section : [];
  let service;
  for (let i = 0; i < services.length && service === undefined; i++) {
    const s = services[i];
    if (isObject(s) && text(s.unique_id) === serviceId) service = s;
  }
  if (!service) throw badInput('service_id', 'no service of the case has this unique_id');
  if (service.service_implementing_agency !== UNHCR_AGENCY) return null;

  let since = null;
  if (!isMissing(bundle.since)) {
    since = instant(bundle.since);
    if (since === null) throw badInput('since', 'not an ISO date-time');
  }
  let chosen = null;
  let chosenAt = null;
  const referrals = bundle.referrals ?? [];
  for (let i = 0; i < referrals.length; i++) {
    const r = referrals[i];
    if (!isObject(r) || text(r.service_record_id) !== serviceId) continue;
    const at = instant(r.created_at);
    if (at === null) continue;
    if (since !== null && at < since) continue;
    if (chosen === null || at > chosenAt) {
      chosen = r;
      chosenAt = at;
    }
  }
  return chosen ? { kase, service, referral: chosen } : null;
}

/** The skip outcome of a service that is not a new UNHCR referral. */
export function notReferred() {
  return skip(NOT_REFERRED, 'not a UNHCR service referred since the cursor');
}

/**
 * The admin contact from `deployment.toml` (admin_email, admin_name,
 * admin_position, admin_phone), sent when the caseworker's profile lacks a
 * value. `keys` are the ones this design sends; each must be set.
 */
export function adminContact(deployment, keys) {
  const out = {};
  const missing = [];
  for (const k of keys) {
    const v = text(deployment[`admin_${k}`]);
    if (v === null) missing.push(`admin_${k}`);
    out[k] = v;
  }
  if (missing.length) throw fatal(`deployment.${missing.join(', deployment.')} not set`);
  return out;
}

// Contact field → key of the Primero user profile.
const USER_KEY = { email: 'email', name: 'full_name', position: 'position', phone: 'phone' };

/**
 * The referring caseworker's contact: each value from the case owner's
 * profile, else the admin's (business rule kept from the original, §5.7).
 * `adminFields` lists the fields that fell back, so the host can log it.
 */
export function referrerContact(owner, admin) {
  const values = {};
  const adminFields = [];
  const keys = Object.keys(admin);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const own = isObject(owner) ? text(owner[USER_KEY[k]]) : null;
    if (own !== null) {
      values[k] = own;
    } else {
      values[k] = admin[k];
      adminFields.push(k);
    }
  }
  return { values, adminFields };
}

/** The case's system ids; both are required (they identify the referral in proGres). */
export function caseIds(kase) {
  const id = text(kase.id);
  const caseId = text(kase.case_id);
  if (!id || !caseId) {
    const missing = [];
    if (!id) missing.push('id');
    if (!caseId) missing.push('case_id');
    throw badInput(missing[0], `case field${missing.length > 1 ? 's' : ''} missing or empty: ${missing.join(', ')}`);
  }
  return { id, caseId };
}

/** `date_of_birth` as YYYY-MM-DD; null when absent; bad-input when malformed. */
export function dateOfBirth(kase) {
  if (isMissing(kase.date_of_birth)) return null;
  const d = datePart(kase.date_of_birth);
  if (d === null) throw badInput('date_of_birth', 'not a valid date');
  return d;
}

/** A scalar as a string (phone numbers may be stored as numbers), else null. */
export function asText(value) {
  return typeof value === 'number' ? String(value) : text(value);
}

/** The referral's `created_at` as YYYY-MM-DD (the referral date proGres keeps). */
export function referralDate(referral) {
  const d = datePart(referral.created_at);
  if (d === null) throw badInput('referrals.created_at', 'not a valid date-time');
  return d;
}

/**
 * What the host needs besides the partner payload: the ids to key the
 * delivery on and to hold the cursor with, and the fields that used the
 * admin contact.
 */
export function envelope(selected, adminFields) {
  return {
    service_id: text(selected.service.unique_id),
    referral_id: text(selected.referral.id),
    referred_at: text(selected.referral.created_at),
    admin_contact: adminFields,
  };
}
