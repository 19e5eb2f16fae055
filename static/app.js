// Progressive enhancement only: every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Assets: the select-all box ticks every asset on the page.
  const all = document.getElementById("select-all");
  if (all) {
    const boxes = () => document.querySelectorAll('input[name="asset_id"]');
    all.addEventListener("change", () => boxes().forEach((b) => { b.checked = all.checked; }));
  }

  // Settings: live preview of the template as the admin types.
  const form = document.getElementById("settings-form");
  if (form) {
    let timer = null;
    const refresh = async () => {
      const params = new URLSearchParams();
      for (const name of ["publish_server", "template", "allowed_hosts"]) {
        params.set(name, form.elements[name].value);
      }
      const res = await fetch("/settings/preview?" + params, { credentials: "same-origin" });
      if (res.ok) {
        const html = await res.text();
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("preview");
        const old = document.getElementById("preview");
        if (fresh && old) old.replaceWith(fresh);
      }
    };
    form.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    });
  }

  // Settings: show only the chosen provider's fields (all stay in the form, so nothing is lost).
  const radios = document.querySelectorAll('input[name="provider"]');
  if (radios.length) {
    const sync = () => {
      const chosen = document.querySelector('input[name="provider"]:checked');
      document.querySelectorAll(".provider-fields").forEach((f) => {
        f.hidden = !chosen || f.dataset.provider !== chosen.value;
      });
    };
    radios.forEach((r) => r.addEventListener("change", sync));
    sync();
  }

  // Settings: a chosen credentials file (e.g. .edgerc) fills its text area; nothing is uploaded
  // until the form is saved, and the file itself is never sent.
  document.querySelectorAll("input[type=file][data-fills]").forEach((input) => {
    input.addEventListener("change", async () => {
      const target = document.getElementById(input.dataset.fills);
      if (target && input.files.length) target.value = await input.files[0].text();
    });
  });

  // Invalidation: live progress from the JSON view's counts-only form (`?urls=none`, the same
  // cost however many URLs), the shown page of URLs refreshed when the counts move; reload
  // once finished to show the result.
  const box = document.getElementById("invalidation");
  const finished = ["succeeded", "partially_failed", "failed"];
  if (box && !finished.includes(box.dataset.status)) {
    const id = box.dataset.id;
    const labels = { queued: "Queued", running: "Running" };
    const json = async (url) => {
      const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      return res.ok ? res.json() : null;
    };
    const setText = (elementId, value) => {
      const el = document.getElementById(elementId);
      if (el) el.textContent = value;
    };
    // The rows on screen, updated in place by their position in the list.
    const refreshRows = async () => {
      const rows = document.querySelectorAll("#urls tbody tr[data-position]");
      if (!rows.length) return;
      const params = new URLSearchParams(window.location.search);
      params.delete("urls");
      const page = await json("/invalidations/" + id + "?" + params);
      if (!page || !page.urls) return;
      const byPosition = new Map(page.urls.map((u) => [String(u.position), u]));
      rows.forEach((row) => {
        const u = byPosition.get(row.dataset.position);
        if (!u) return;
        row.className = "url-" + u.status;
        row.querySelector(".outcome").textContent = u.status;
        row.querySelector(".attempts").textContent = u.attempts;
        row.querySelector(".http").textContent = u.http_status === null ? "" : u.http_status;
        row.querySelector(".detail").textContent = u.error === null ? "" : u.error;
      });
    };
    let last = "";
    const tick = async () => {
      try {
        const inv = await json("/invalidations/" + id + "?urls=none");
        if (inv) {
          const done = inv.succeeded + inv.failed;
          document.getElementById("progress").value = done;
          setText("done-count", done);
          setText("succeeded-count", inv.succeeded);
          setText("failed-count", inv.failed);
          for (const [state, count] of Object.entries(inv.counts)) {
            setText("count-" + state, count);
            const link = document.querySelector("#url-filters .count-" + state);
            if (link && !link.hasAttribute("aria-current")) link.hidden = count === 0;
          }
          setText("status", labels[inv.status] || inv.status);
          const clearing = document.getElementById("clearing");
          if (clearing && inv.clearing) clearing.textContent = inv.clearing;
          if (finished.includes(inv.status)) {
            window.location.reload();
            return;
          }
          const now = JSON.stringify(inv.counts);
          if (now !== last) {
            last = now;
            await refreshRows();
          }
        }
      } catch (e) {
        // Network hiccup: try again on the next tick.
      }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 500);
  }
});
