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

  // Invalidation: live progress from the JSON view; reload once finished to show the result.
  const box = document.getElementById("invalidation");
  if (box && !["succeeded", "partially_failed", "failed"].includes(box.dataset.status)) {
    const id = box.dataset.id;
    const tick = async () => {
      try {
        const res = await fetch("/invalidations/" + id, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (res.ok) {
          const inv = await res.json();
          const done = inv.succeeded + inv.failed;
          document.getElementById("progress").value = done;
          document.getElementById("done-count").textContent = done;
          document.getElementById("succeeded-count").textContent = inv.succeeded;
          document.getElementById("failed-count").textContent = inv.failed;
          document.getElementById("status").textContent = inv.status === "running" ? "Running" : inv.status;
          // The URL table is in the same order as the JSON's urls.
          const rows = document.querySelectorAll("#urls tbody tr");
          inv.urls.forEach((u, i) => {
            const cells = rows[i] ? rows[i].cells : null;
            if (!cells) return;
            rows[i].className = "url-" + u.status;
            cells[1].textContent = u.status;
            cells[2].textContent = u.attempts;
            cells[3].textContent = u.http_status === null ? "" : u.http_status;
            cells[4].textContent = u.error === null ? "" : u.error;
          });
          if (["succeeded", "partially_failed", "failed"].includes(inv.status)) {
            window.location.reload();
            return;
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
