// The end-user usage page: balances per meter, a button that records one unit, the recent
// usage, and live updates over the usageBalance subscription. A copy-paste starting point:
// plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Opened as /examples/usage/#token=<customer session token>; ?gateway=<url> points it at a
// gateway on another origin (which must list this page's origin in GATEWAY_CORS_ORIGINS).
"use strict";

const params = new URLSearchParams(location.search);
const GATEWAY = (params.get("gateway") || location.origin).replace(/\/+$/, "");
let token = new URLSearchParams(location.hash.slice(1)).get("token") || "";

const $ = (id) => document.getElementById(id);
const state = { meters: new Map(), upgrades: new Map(), meterNames: new Map() };

async function gql(query, variables = {}) {
  const response = await fetch(GATEWAY + "/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(body.errors[0].message);
  return body.data;
}

const PAGE = `query UsagePage {
  billing {
    customer { externalId }
    currentSubscription { id price { slug } currentBillingPeriodEnd }
    usageBalances {
      usageMeter { id slug name }
      availableBalance usedBalance balanceLimit percentUsed billingPeriodEnd
    }
  }
}`;
const RECENT = `query RecentUsage {
  billing { usageEvents(first: 10) { edges { node { id amount usageDate usageMeterId } } } }
}`;
const RECORD = `mutation UseOne($meter: String!) {
  createUsageEvent(input: {target: {usageMeterSlug: $meter}, requireBalance: true}) {
    __typename
    ... on UsageEventRecorded {
      balance { usageMeter { slug } availableBalance usedBalance balanceLimit percentUsed billingPeriodEnd }
    }
    ... on InsufficientBalance { meterSlug upgradeOptions { slug name defaultPrice { unitPrice currency } } }
    ... on UserError { message }
  }
}`;
const LIVE = `subscription LiveBalance($meter: String!) {
  usageBalance(meterSlug: $meter) {
    usageMeter { slug } availableBalance usedBalance balanceLimit percentUsed billingPeriodEnd
  }
}`;

// ---------------------------------------------------------------- rendering

function render(balance) {
  const slug = balance.usageMeter.slug;
  state.meters.set(slug, balance);
  let box = document.querySelector(`.meter[data-meter="${CSS.escape(slug)}"]`);
  if (!box) {
    box = document.createElement("div");
    box.className = "meter";
    box.dataset.meter = slug;
    box.innerHTML = `<h3></h3><div class="bar"><div class="fill"></div></div>
      <div class="numbers"><span class="used"></span><span class="percent"></span></div>
      <div class="out" hidden></div><button type="button" class="use"></button>`;
    box.querySelector("h3").textContent = state.meterNames.get(slug) || slug;
    box.querySelector(".use").textContent = `Use 1 ${state.meterNames.get(slug) || slug}`;
    box.querySelector(".use").addEventListener("click", () => useOne(slug));
    $("meters").append(box);
  }
  const limit = balance.balanceLimit;
  const percent = limit ? Math.min(100, balance.percentUsed ?? 0) : 0;
  box.querySelector(".fill").style.width = `${percent}%`;
  box.querySelector(".used").textContent =
    limit === null ? `${balance.usedBalance} used` : `${balance.usedBalance} of ${limit} used`;
  box.querySelector(".percent").textContent = limit ? `${Math.round(balance.percentUsed)}%` : "";
  const exhausted = limit !== null && balance.availableBalance <= 0;
  box.classList.toggle("exhausted", exhausted);
  const out = box.querySelector(".out");
  out.hidden = !exhausted;
  if (exhausted) {
    const renews = new Date(balance.billingPeriodEnd).toLocaleDateString();
    out.innerHTML = "<strong>Out of credits.</strong> <span></span><ul></ul>";
    out.querySelector("span").textContent = `They renew on ${renews}.`;
    for (const option of state.upgrades.get(slug) || []) {
      const item = document.createElement("li");
      const price = option.defaultPrice;
      item.textContent = price
        ? `Upgrade to ${option.name} (${(price.unitPrice / 100).toFixed(2)} ${price.currency})`
        : `Upgrade to ${option.name}`;
      out.querySelector("ul").append(item);
    }
  }
}

let recentAsked = 0;
async function refreshRecent() {
  const asked = ++recentAsked;
  const data = await gql(RECENT);
  if (asked !== recentAsked) return; // a later refresh was asked for: its answer wins
  const names = new Map([...state.meterIds].map(([id, slug]) => [id, state.meterNames.get(slug)]));
  $("recent").replaceChildren(
    ...data.billing.usageEvents.edges.map(({ node }) => {
      const item = document.createElement("li");
      item.textContent = `${new Date(node.usageDate).toLocaleString()}: ${node.amount} ${names.get(node.usageMeterId) || ""}`;
      return item;
    }),
  );
}

async function useOne(slug) {
  const result = (await gql(RECORD, { meter: slug })).createUsageEvent;
  if (result.__typename === "UsageEventRecorded") {
    render(result.balance); // the answer carries the new balance: no reload
    refreshRecent();
  } else if (result.__typename === "InsufficientBalance") {
    state.upgrades.set(slug, result.upgradeOptions);
    render(state.meters.get(slug));
  } else {
    $("status").textContent = result.message;
  }
}

// ---------------------------------------------------------------- live updates
// The graphql-transport-ws protocol, written out: six message types, no library needed
// (connection_init/ack, subscribe, next, error, complete; ping answered with pong).

function live(slugs) {
  const ws = new WebSocket(GATEWAY.replace(/^http/, "ws") + "/graphql", "graphql-transport-ws");
  ws.onopen = () =>
    ws.send(JSON.stringify({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } }));
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      slugs.forEach((slug) =>
        ws.send(JSON.stringify({ id: slug, type: "subscribe", payload: { query: LIVE, variables: { meter: slug } } })),
      );
      $("status").textContent = "Live";
      $("status").className = "live";
    } else if (message.type === "next" && message.payload.data) {
      render(message.payload.data.usageBalance);
      refreshRecent();
    } else if (message.type === "next" || message.type === "error") {
      $("status").textContent = "Live updates stopped: " + JSON.stringify(message.payload);
    } else if (message.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    }
  };
  ws.onclose = (event) => {
    $("status").className = "";
    $("status").textContent = `Live updates disconnected (${event.code}); reconnecting...`;
    if (event.code !== 4403) setTimeout(() => live(slugs), 2000); // 4403: the token is refused
  };
}

// ---------------------------------------------------------------- start

async function start() {
  if (!token) {
    $("signin").hidden = false;
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = "token=" + encodeURIComponent($("token").value.trim());
      location.reload();
    });
    return;
  }
  try {
    const billing = (await gql(PAGE)).billing;
    const sub = billing.currentSubscription;
    $("plan").textContent = sub
      ? `${billing.customer.externalId}: plan ${sub.price.slug}, period ends ${new Date(sub.currentBillingPeriodEnd).toLocaleDateString()}`
      : `${billing.customer.externalId}: no current subscription`;
    state.meterIds = new Map(billing.usageBalances.map((b) => [b.usageMeter.id, b.usageMeter.slug]));
    billing.usageBalances.forEach((b) => state.meterNames.set(b.usageMeter.slug, b.usageMeter.name));
    billing.usageBalances.forEach(render);
    await refreshRecent();
    live(billing.usageBalances.map((b) => b.usageMeter.slug));
  } catch (error) {
    $("status").textContent = `Cannot load your usage: ${error.message}`;
  }
}

start();
