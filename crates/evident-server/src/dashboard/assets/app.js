// Evident dashboard (first cut): sign-in into a server-side session and sign-out.
"use strict";
let csrf = null;
function show(session) {
  csrf = session.csrf_token;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("who").textContent =
    "Signed in as " + session.key_id + " (" + session.role + (session.tenant ? ", tenant " + session.tenant : "") + ")";
}
document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/dashboard/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: document.getElementById("key").value }) });
  if (r.ok) { show(await r.json()); } else {
    document.getElementById("login-error").textContent = (await r.json()).error.message;
  }
});
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/dashboard/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
  location.reload();
});
fetch("/dashboard/session").then((r) => (r.ok ? r.json().then(show) : null));
