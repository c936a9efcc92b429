// City Chain explorer: plain JS over the gateway's /v1 API and its event stream.
"use strict";

const HEX64 = /^[0-9a-fA-F]{64}$/;
const ORDER = ["admitted", "held", "ordered", "federated"];
let source = null;
let lights = new Map();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function short(h) { return h.length > 16 ? h.slice(0, 8) + "…" + h.slice(-8) : h; }

function showError(msg) { document.getElementById("error").textContent = msg || ""; }

async function getJson(url, opts) {
  const r = await fetch(url, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.message || r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

function setState(s) {
  const cur = document.getElementById("state");
  const rank = ORDER.indexOf(s);
  if (rank < 0 || rank < ORDER.indexOf(cur.dataset.state)) return;
  cur.textContent = s;
  cur.dataset.state = s;
}

function addTimeline(list, kind, detail, at) {
  const li = el("li");
  li.dataset.kind = kind;
  li.appendChild(el("span", kind.replace("_", " "), "kind"));
  const when = at ? new Date(at).toISOString() : "";
  li.appendChild(el("span", when + (detail ? " " + detail : "")));
  list.appendChild(li);
}

function describe(ev) {
  const d = ev.detail || {};
  if (d.sequence !== undefined) return "checkpoint " + d.sequence;
  if (d.stripe) return "stripe " + short(d.stripe) + ", " + d.receipts + " receipts";
  if (d.tier) return "tier " + d.tier;
  if (d.reason) return d.reason;
  return "";
}

function follow(params, onEvent) {
  if (source) source.close();
  source = new EventSource("/v1/events?" + params + "&last_event_id=0");
  const kinds = ["admitted", "held", "ordered", "federated", "repair_requested",
    "repair_acknowledged", "repair_completed", "repair_failed", "withdrawn", "gap"];
  for (const k of kinds) {
    source.addEventListener(k, (m) => {
      let ev = {};
      try { ev = JSON.parse(m.data); } catch (_) { /* a gap event */ }
      onEvent(k, ev);
    });
  }
}

async function showHolders(receipts) {
  const body = document.querySelector("#holders tbody");
  body.replaceChildren();
  if (!receipts.length) return;
  let stripe = null;
  try { stripe = await getJson("/v1/stripes/" + receipts[0].stripe_id); } catch (_) { /* not held here */ }
  const rows = stripe ? stripe.holders.map((h) => [h.index, h.node_id, h.live])
    : receipts.map((r) => [r.shard_index, r.holder, lights.has(r.holder)]);
  for (const [idx, node, live] of rows) {
    const tr = el("tr");
    tr.appendChild(el("td", String(idx)));
    tr.appendChild(el("td", short(node), "mono"));
    tr.appendChild(el("td", lights.has(node) ? lights.get(node).zone : "?"));
    tr.appendChild(el("td", live ? "live" : "gone"));
    body.appendChild(tr);
  }
}

async function searchTx(id) {
  document.getElementById("account-section").hidden = true;
  const sec = document.getElementById("tx-section");
  const facts = document.getElementById("tx-facts");
  const list = document.getElementById("timeline");
  list.replaceChildren();
  facts.replaceChildren();
  document.getElementById("state").dataset.state = "";
  document.getElementById("state").textContent = "—";
  sec.hidden = false;
  sec.dataset.txId = id.toLowerCase();
  const add = (k, v) => { facts.appendChild(el("dt", k)); facts.appendChild(el("dd", v, "mono")); };
  add("tx id", id.toLowerCase());
  try {
    const tx = await getJson("/v1/txs/" + id);
    setState(tx.state);
    add("found in", tx.source);
    if (tx.tx) {
      add("sender", tx.tx.tx.sender);
      add("receiver", tx.tx.tx.receiver);
      add("amount", String(tx.tx.tx.amount));
    }
    if (tx.ordering) add("checkpoint", String(tx.ordering.sequence));
    await showHolders(tx.receipts);
  } catch (e) {
    if (e.status !== 404) showError(e.message);
    else add("state", "not known to this representative yet");
  }
  follow("tx=" + id, (kind, ev) => {
    if (kind === "gap") { addTimeline(list, "gap", "some events were missed"); return; }
    addTimeline(list, kind, describe(ev), ev.at_ms);
    setState(kind);
  });
}

function fillRows(tbody, rows) {
  tbody.replaceChildren();
  for (const cells of rows) {
    const tr = el("tr");
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    tbody.appendChild(tr);
  }
}

function when(ms) { return ms ? new Date(ms).toISOString() : "—"; }

// Balance and nonce (/v1/accounts/{id}) and stake (/v1/accounts/{id}/stake): each shown
// when this representative answers it.
async function showAccount(id) {
  const facts = document.getElementById("account-facts");
  facts.replaceChildren();
  const add = (k, v, key) => {
    facts.appendChild(el("dt", k));
    const dd = el("dd", v, "mono");
    if (key) dd.dataset.fact = key;
    facts.appendChild(dd);
  };
  add("account", id.toLowerCase());
  try {
    const a = await getJson("/v1/accounts/" + id);
    add("balance", String(a.balance), "balance");
    add("nonce", String(a.nonce), "nonce");
  } catch (e) { add("balance", "not available: " + e.message); }
  const dels = document.querySelector("#delegations tbody");
  const unb = document.querySelector("#unbonding tbody");
  try {
    const s = await getJson("/v1/accounts/" + id + "/stake");
    add("bonded", String(s.bonded), "bonded");
    add("rewards (claimable)", String(s.rewards), "rewards");
    add("node", s.node ? s.node.kind + ", stake " + s.node.stake +
      (s.node.active ? "" : ", inactive") + (s.node.representative ? ", representative" : "")
      : "not registered", "node");
    add("dpos term", String(s.term), "term");
    fillRows(dels, s.delegations.map((d) => [[short(d.validator), "mono"], [String(d.amount)],
      [String(d.lots.length)], [when(d.lots.length ? d.lots[0].unlock_at_ms : 0)]]));
    fillRows(unb, s.unbonding.map((u) => [[short(u.validator), "mono"], [String(u.amount)],
      [when(u.release_at_ms)]]));
  } catch (e) {
    add("stake", "not available: " + e.message);
    dels.replaceChildren();
    unb.replaceChildren();
  }
}

function searchAccount(id) {
  document.getElementById("tx-section").hidden = true;
  const sec = document.getElementById("account-section");
  sec.hidden = false;
  sec.dataset.account = id.toLowerCase();
  showAccount(id);
  const list = document.getElementById("account-events");
  list.replaceChildren();
  follow("account=" + id, (kind, ev) => {
    const li = el("li");
    const a = el("a", short(ev.tx_id || ""), "mono");
    a.href = "#tx=" + ev.tx_id;
    li.appendChild(el("span", kind + " "));
    li.appendChild(a);
    list.appendChild(li);
  });
}

function route() {
  const h = location.hash.slice(1);
  const [what, id] = h.split("=");
  if (!id || !HEX64.test(id)) return;
  document.getElementById("q").value = id;
  const kind = what === "account" ? "account" : "tx";
  document.querySelector("input[name=what][value=" + kind + "]").checked = true;
  if (what === "account") searchAccount(id); else searchTx(id);
}

async function loadNodes() {
  try {
    const v = await getJson("/v1/nodes");
    document.getElementById("city").textContent =
      "City " + v.city + " · answering representative " + short(v.this_node);
    lights = new Map(v.lights.map((n) => [n.node_id, n]));
    const body = document.querySelector("#lights tbody");
    body.replaceChildren();
    for (const n of v.lights) {
      const tr = el("tr");
      tr.appendChild(el("td", short(n.node_id), "mono"));
      tr.appendChild(el("td", n.zone));
      tr.appendChild(el("td", n.addr));
      body.appendChild(tr);
    }
    const ul = document.getElementById("committee");
    ul.replaceChildren();
    for (const m of v.committee) {
      ul.appendChild(el("li", short(m.node_id) + " at " + m.addr + (m.this_node ? " (this node)" : "")));
    }
  } catch (e) { showError("nodes: " + e.message); }
}

function memberRows(members) {
  return members.map((m) => [[short(m.node_id), "mono"], [String(m.weight)],
    [String(m.dpos_stake)], [m.address || "—"]]);
}

// The committee, epoch and dpos term (/v1/committee); a node without consensus says so.
async function loadCommittee() {
  const p = document.getElementById("epoch");
  try {
    const c = await getJson("/v1/committee");
    let text = "Epoch " + c.epoch + " (from checkpoint " + c.epoch_first_seq + "), " +
      c.committed + " checkpoints committed" + (c.switching ? ", switching" : "") +
      (c.removed ? ", this node was left out" : "") +
      (c.standby ? ", this node is a standby (not elected yet)" : "");
    if (c.dpos) {
      text += " · dpos term " + c.dpos.term + ", ends " + when(c.dpos.ends_at_ms);
    }
    p.textContent = text;
    p.dataset.epoch = String(c.epoch);
    fillRows(document.querySelector("#members tbody"), memberRows(c.members));
    const next = c.dpos ? c.dpos.next : [];
    let caption = c.dpos && c.dpos.next_elected
      ? "Next committee (elected, starts at the next epoch)"
      : "Next committee (who the term's end would elect now)";
    if (c.dpos && c.dpos.next_unreachable.length) {
      caption = "Next committee (kept: elected " +
        c.dpos.next_unreachable.map(short).join(", ") + " without an address)";
    }
    document.getElementById("next-caption").textContent = caption;
    fillRows(document.querySelector("#next tbody"), memberRows(next));
  } catch (e) {
    p.textContent = "Committee: " + e.message;
    delete p.dataset.epoch;
  }
}

document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  showError("");
  const id = document.getElementById("q").value.trim();
  if (!HEX64.test(id)) { showError("Enter 64 hex characters."); return; }
  const what = document.querySelector("input[name=what]:checked").value;
  location.hash = what + "=" + id.toLowerCase();
});

document.getElementById("repair").addEventListener("click", async () => {
  const id = document.getElementById("tx-section").dataset.txId;
  try {
    const t = await getJson("/v1/repair_requests", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ tx_id: id }),
    });
    showError("");
    addTimeline(document.getElementById("timeline"), "repair", "request " + t.request_id + " started");
  } catch (e) { showError("repair: " + e.message); }
});

window.addEventListener("hashchange", route);
loadNodes();
setInterval(loadNodes, 5000);
loadCommittee();
setInterval(loadCommittee, 5000);
route();
