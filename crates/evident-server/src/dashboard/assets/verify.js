// Evident dashboard: proof verification in the browser, trusting nothing the server says but
// the node key pinned at sign-in. An entry's hash is recomputed from its fields (the canonical
// entry encoding of docs/FORMAT.md), its RFC 6962 leaf hashed over hash ‖ seal, the inclusion
// path folded up to the root (RFC 9162 §2.1.3.2), and the checkpoint note's Ed25519 signature
// (C2SP signed note) checked with WebCrypto against the pinned key; its witness cosignatures
// (C2SP tlog-cosignature, cosignature/v1) checked against the witness keys pinned at sign-in
// and the node's k-of-n witness policy applied (docs/FORMAT.md §16). Hand-written, no library.
"use strict";

const EvidentVerify = (() => {
  const enc = new TextEncoder();

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function unhex(text) {
    if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) throw new Error("not lowercase hex: " + text);
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
    return out;
  }
  function unbase64(text) {
    const raw = atob(text);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

  // ---- canonical entry encoding (crates/evident-core/src/canonical.rs) ----
  function u32(n) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; }
  function u64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; }
  function i64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigInt64(0, BigInt(n)); return b; }
  function str(s) { const b = enc.encode(s); return concat(u32(b.length), b); }
  function millis(text) {
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) throw new Error("not an RFC 3339 time: " + text);
    return ms;
  }
  function uuid(text) {
    const h = String(text).replace(/-/g, "").toLowerCase();
    if (h.length !== 32) throw new Error("not a UUID: " + text);
    return unhex(h);
  }
  function ipv4(text) {
    const parts = text.split(".");
    if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && +p < 256)) throw new Error("bad IPv4 " + text);
    return Uint8Array.from(parts, Number);
  }
  function ipv6(text) {
    let body = text;
    const last = body.lastIndexOf(":");
    if (body.slice(last + 1).includes(".")) {
      const v4 = ipv4(body.slice(last + 1));
      body = body.slice(0, last + 1) + ((v4[0] << 8) | v4[1]).toString(16) + ":" + ((v4[2] << 8) | v4[3]).toString(16);
    }
    const tail = [];
    const [head, rest] = body.includes("::") ? body.split("::") : [body, null];
    const words = (s) => (s ? s.split(":").map((w) => { if (!/^[0-9a-fA-F]{1,4}$/.test(w)) throw new Error("bad IPv6 " + text); return parseInt(w, 16); }) : []);
    const a = words(head);
    const b = rest === null ? [] : words(rest);
    const fill = 8 - tail.length - a.length - b.length;
    if (rest === null ? fill !== 0 : fill < 0) throw new Error("bad IPv6 " + text);
    const all = [...a, ...new Array(rest === null ? 0 : fill).fill(0), ...b, ...tail];
    const out = new Uint8Array(16);
    all.forEach((w, i) => { out[2 * i] = w >> 8; out[2 * i + 1] = w & 0xff; });
    return out;
  }
  function ip(text) {
    if (text === null || text === undefined) return Uint8Array.of(0);
    return text.includes(":") ? concat(Uint8Array.of(6), ipv6(text)) : concat(Uint8Array.of(4), ipv4(text));
  }
  // RFC 8785: JSON.stringify already writes strings and numbers as JCS does; members sorted by
  // UTF-16 code units, which is what Array.prototype.sort compares.
  function jcs(value) {
    if (value === null || typeof value !== "object") return JSON.stringify(value);
    if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
    return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }
  function optional(present, bytes) {
    return present ? concat(Uint8Array.of(1), bytes) : Uint8Array.of(0);
  }
  function canonicalEntry(e) {
    const v2 = e.appended_by !== null && e.appended_by !== undefined;
    const magic = enc.encode(v2 ? "evident/entry/v2\0" : "evident/entry/v1\0");
    const parts = [
      magic, u64(e.seq), uuid(e.id), i64(millis(e.recorded_at)),
      e.occurred_at ? concat(Uint8Array.of(1), i64(millis(e.occurred_at))) : Uint8Array.of(0),
      str(e.node_id), str(e.tenant), str(e.actor.id), str(e.actor.kind), ip(e.actor.ip),
      optional(e.actor.user_agent !== null && e.actor.user_agent !== undefined, str(e.actor.user_agent || "")),
      str(e.action), str(e.target.kind), str(e.target.id), str(e.outcome), str(e.severity), str(jcs(e.context)),
    ];
    if (v2) parts.push(str(e.appended_by));
    return concat(...parts);
  }

  // ---- RFC 9162 §2.1.3.2 inclusion ----
  async function rootFromInclusion(index, size, leaf, path) {
    if (index >= size) throw new Error(`leaf ${index} is outside a tree of ${size}`);
    let fn = BigInt(index);
    let sn = BigInt(size) - 1n;
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new Error("the audit path is longer than the tree is deep");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) { while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; } }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) throw new Error("the audit path is shorter than the tree is deep");
    return r;
  }

  // ---- C2SP signed note and verifier key ----
  function parseVerifierKey(vkey) {
    // <name>+<key id hex>+<base64 key>: the name has no "+", the base64 may.
    const m = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(vkey.trim());
    if (!m) throw new Error("the pinned key is not <name>+<key id>+<key>");
    const parts = m.slice(1);
    const raw = unbase64(parts[2]);
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("the pinned key is not an Ed25519 note key");
    return { name: parts[0], keyId: parts[1], publicKey: raw.slice(1) };
  }
  function parseNote(text) {
    const split = text.indexOf("\n\n");
    if (split < 0 || !text.endsWith("\n")) throw new Error("the checkpoint is not a signed note");
    const body = text.slice(0, split + 1);
    const lines = body.split("\n");
    const sigs = text.slice(split + 2, -1).split("\n").map((line) => {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m) throw new Error("bad signature line: " + line);
      return { name: m[1], raw: unbase64(m[2]) };
    });
    if (lines.length < 4) throw new Error("the checkpoint body has fewer than three lines");
    return { body, origin: lines[0], size: Number(lines[1]), root: unbase64(lines[2]), sigs };
  }
  async function keyHash(name, type, publicKey) {
    return (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(type), publicKey))).slice(0, 4);
  }
  async function ed25519Verify(publicKey, signature, message) {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  // ---- C2SP tlog-cosignature (cosignature/v1; crates/evident-core/src/cosignature.rs) ----
  const MAX_TIMESTAMP = (1n << 63n) - 1n;
  function isoSeconds(t) {
    const ms = Number(t) * 1000;
    return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : null;
  }
  /// A cosigner verifier key `<name>+<key id hex>+<base64(0x04 ‖ 32-byte Ed25519 key)>`, its
  /// key id checked: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key).
  async function parseCosignerKey(vkey) {
    const m = /^([^+\s]+)\+([0-9a-f]{8})\+(.+)$/.exec(String(vkey).trim());
    if (!m) throw new Error("the witness key is not <name>+<key id>+<key>: " + vkey);
    let raw;
    try { raw = unbase64(m[3]); } catch (_) { throw new Error("witness key " + m[1] + ": the key is not base64"); }
    if (raw.length !== 33 || raw[0] !== 4) throw new Error("witness key " + m[1] + " is not a cosignature/v1 (0x04) Ed25519 key");
    const publicKey = raw.slice(1);
    const id = hex(await keyHash(m[1], 4, publicKey));
    if (id !== m[2]) throw new Error(`witness key ${m[1]}: its key id ${m[2]} is not the key's (${id})`);
    return { name: m[1], keyId: m[2], publicKey };
  }
  function parseSignatureLine(line) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(String(line).replace(/\n$/, ""));
    if (!m) throw new Error("not a signature line (\u2014 <name> <base64>): " + line);
    let raw;
    try { raw = unbase64(m[2]); } catch (_) { throw new Error("the signature of " + m[1] + " is not base64"); }
    return { name: m[1], raw };
  }
  /// Verifies one cosignature/v1 line on a checkpoint against the cosigner key `vkey` (a key
  /// string, or one parsed by parseCosignerKey), per C2SP tlog-cosignature: the line's bytes
  /// are key id (4) ‖ big-endian timestamp (8) ‖ Ed25519 signature (64), the signed message
  /// is `cosignature/v1\ntime <t>\n` ‖ the checkpoint body. `checkpoint` is the body (the
  /// note's text, final newline included) or the whole signed note; `line` is the signature
  /// line (`\u2014 <name> <base64>`) or a signature of parseNote. Returns {ok: true,
  /// timestamp (seconds), time (ISO)} or {ok: false, reason}.
  async function verifyCosignature(checkpoint, line, vkey) {
    const fail = (reason) => ({ ok: false, reason });
    try {
      const key = typeof vkey === "string" ? await parseCosignerKey(vkey) : vkey;
      const s = typeof line === "string" ? parseSignatureLine(line) : line;
      const split = checkpoint.indexOf("\n\n");
      const body = split >= 0 ? checkpoint.slice(0, split + 1) : checkpoint;
      if (!body.endsWith("\n")) return fail("the checkpoint body does not end in a newline");
      if (s.name !== key.name) return fail(`the line is by ${s.name}, the key is ${key.name}'s`);
      if (s.raw.length !== 4 + 8 + 64) return fail(`not a cosignature/v1 signature: ${s.raw.length} bytes, not 4 + 8 + 64`);
      const id = hex(s.raw.slice(0, 4));
      if (id !== key.keyId) return fail(`the line's key id ${id} is not the key's ${key.keyId}`);
      const t = new DataView(s.raw.buffer, s.raw.byteOffset, s.raw.length).getBigUint64(4);
      if (t > MAX_TIMESTAMP) return fail(`the timestamp ${t} exceeds 2^63 - 1`);
      const message = enc.encode("cosignature/v1\ntime " + t.toString() + "\n" + body);
      const good = await ed25519Verify(key.publicKey, s.raw.slice(12), message);
      if (!good) return fail(`the Ed25519 signature does not verify under ${key.name}+${key.keyId} (over this checkpoint at time ${t})`);
      return { ok: true, timestamp: Number(t), time: isoSeconds(t) };
    } catch (err) {
      return fail(err.message);
    }
  }

  /// The witness lines of checkpoint note `note` (text or parsed) against the pinned witness
  /// keys `witnessKeys` and policy `k` (docs/FORMAT.md §16): a line by a listed witness (its
  /// name and key id) must verify; one by an unlisted key is shown, never counted; a witness
  /// counts once however many lines it has. Returns {lines: [{name, status: verified | bad |
  /// unlisted | other, time, detail}], counted: [names], required, listed, met (null without
  /// a policy), bad (why a listed witness's line failed, or null), ok, reason}.
  async function checkWitnesses(note, witnessKeys, k) {
    const n = typeof note === "string" ? parseNote(note) : note;
    const keys = [];
    for (const v of witnessKeys || []) keys.push(await parseCosignerKey(v));
    const lines = [];
    const counted = [];
    let bad = null;
    for (const s of n.sigs) {
      if (s.raw.length !== 4 + 8 + 64) {
        // The log's own signatures (§10, §18: one per signing key) are checked elsewhere.
        if (s.name !== n.origin) lines.push({ name: s.name, status: "other", time: null, detail: `not a cosignature/v1 line (${s.raw.length} bytes): not counted` });
        continue;
      }
      const id = hex(s.raw.slice(0, 4));
      const claimed = isoSeconds(new DataView(s.raw.buffer, s.raw.byteOffset, s.raw.length).getBigUint64(4));
      const listed = keys.find((key) => key.name === s.name && key.keyId === id);
      if (!listed) {
        const other = keys.find((key) => key.name === s.name);
        lines.push({ name: s.name, status: "unlisted", time: claimed, detail: other
          ? `key id ${id} is not the listed key ${other.name}+${other.keyId}: not verified, not counted`
          : "witness not listed on this node ([witness] keys): not verified, not counted" });
        continue;
      }
      const r = await verifyCosignature(n.body, s, listed);
      if (r.ok) {
        if (!counted.includes(s.name)) counted.push(s.name);
        lines.push({ name: s.name, status: "verified", time: r.time, detail: `verified against the pinned witness key ${listed.name}+${listed.keyId}` });
      } else {
        bad = bad || `the cosignature by listed witness ${s.name} does not verify: ${r.reason}`;
        lines.push({ name: s.name, status: "bad", time: claimed, detail: "does not verify: " + r.reason });
      }
    }
    const required = Number(k) || 0;
    const met = required > 0 ? counted.length >= required : null;
    const plural = required === 1 ? "" : "s";
    let reason = null;
    if (bad) reason = bad;
    else if (met === false) reason = `witness policy: ${required} valid cosignature${plural} required, ${counted.length} found`;
    return { lines, counted, required, listed: keys.map((key) => key.name), met, bad, ok: !reason, reason };
  }

  /// Verifies event `e` (as the API shows it) with its inclusion `proof` and the checkpoint
  /// note of the proof's size against `pinnedKey`, and the note's cosignatures against the
  /// pinned `witness` = {keys, k} (k > 0: at least k listed witnesses must have cosigned).
  /// Returns {ok, steps: [{what, ok, detail}], reason, cosignatures, witness}.
  async function verifyEvent(e, proof, note, pinnedKey, witness) {
    const steps = [];
    const step = (what, ok, detail) => { steps.push({ what, ok, detail }); if (!ok) throw new Error(what + ": " + detail); };
    const result = { ok: false, steps, reason: null, cosignatures: [], witness: null };
    try {
      const key = parseVerifierKey(pinnedKey);
      const storedHash = unhex(e.hash);
      if (proof.prev_hash) {
        const computed = await sha256(concat(unhex(proof.prev_hash), canonicalEntry(e)));
        step("entry hash", equal(computed, storedHash),
          equal(computed, storedHash) ? "recomputed from the fields: " + hex(computed)
            : `the fields hash to ${hex(computed)}, the log holds ${e.hash}: the event was changed after it was written`);
      } else {
        steps.push({ what: "entry hash", ok: null, detail: "not recomputed: the previous entry is no longer stored" });
      }
      const leaf = await leafHash(concat(storedHash, unhex(e.seal)));
      const root = await rootFromInclusion(e.seq, proof.size, leaf, proof.proof.map(unhex));
      const n = parseNote(note);
      step("checkpoint origin", n.origin === key.name, `note origin ${n.origin}, pinned key ${key.name}`);
      step("checkpoint size", n.size === proof.size, `proof for ${proof.size}, checkpoint of ${n.size}`);
      step("inclusion", equal(root, n.root),
        equal(root, n.root) ? `leaf ${e.seq} folds to the signed root ${hex(root)} (${proof.proof.length} hashes)`
          : `the audit path gives ${hex(root)}, the checkpoint signs ${hex(n.root)}`);
      const ownId = await keyHash(key.name, 1, key.publicKey);
      const own = n.sigs.find((s) => s.name === key.name && s.raw.length === 68 && equal(s.raw.slice(0, 4), ownId));
      step("node signature present", !!own, own ? "a signature line of key " + key.name + "+" + key.keyId
        : "no signature line of the pinned key " + key.name + "+" + key.keyId);
      const good = await ed25519Verify(key.publicKey, own.raw.slice(4), enc.encode(n.body));
      step("node signature (Ed25519)", good, good ? "valid under the key pinned at sign-in" : "the signature does not verify under the pinned key");
      const w = await checkWitnesses(n, witness ? witness.keys : [], witness ? witness.k : 0);
      result.cosignatures = w.lines;
      result.witness = w;
      if (w.bad) step("witness cosignature", false, w.bad);
      if (w.required > 0) {
        step("witness policy", w.met, w.met
          ? `${w.counted.length} of the ${w.required} required cosignatures verified (${w.counted.join(", ")})`
          : `${w.required} valid cosignature${w.required === 1 ? "" : "s"} required, ${w.counted.length} found`);
      } else {
        steps.push({ what: "witness policy", ok: null, detail: "none on this node ([witness] policy_k = 0): no cosignature required" });
      }
      result.ok = true;
    } catch (err) {
      result.reason = err.message;
      if (!steps.length || steps[steps.length - 1].ok !== false) steps.push({ what: "verification", ok: false, detail: err.message });
    }
    return result;
  }

  return { verifyEvent, verifyCosignature, checkWitnesses, parseCosignerKey, canonicalEntry, rootFromInclusion, parseNote, jcs, ipv6, hex, unhex, sha256 };
})();
