// Runs graphql-http's server audits against the gateway at argv[2]; prints one JSON array
// of {id, name, status, reason} (status: ok, warn or error). An optional bearer credential in
// the environment (AUDIT_AUTHORIZATION) goes on every request.
import { serverAudits } from "graphql-http";

const url = process.argv[2];
const authorization = process.env.AUDIT_AUTHORIZATION;
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  if (authorization) headers.set("authorization", authorization);
  return fetch(input, { ...init, headers });
};

const results = [];
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  results.push({ id: audit.id, name: audit.name, status: result.status, reason: result.reason });
}
process.stdout.write(JSON.stringify(results));
