/* authserver developer portal: progressive enhancement only; every action also works without JS. */
(function () {
  "use strict";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  /* Copy text without showing it. The async Clipboard API needs a secure
     context (https or localhost); elsewhere, or if it is refused, fall back to
     a hidden textarea and execCommand("copy"). */
  function legacyCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.setAttribute("aria-hidden", "true");
    ta.className = "offscreen";
    document.body.appendChild(ta);
    ta.select();
    ta.setSelectionRange(0, text.length);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext && navigator.clipboard.writeText) {
      return navigator.clipboard.writeText(text).catch(function () {
        if (!legacyCopy(text)) { throw new Error("copy failed"); }
      });
    }
    return new Promise(function (resolve, reject) {
      if (legacyCopy(text)) { resolve(); } else { reject(new Error("copy failed")); }
    });
  }

  function initSecret() {
    $all("[data-reveal]").forEach(function (btn) {
      var input = document.getElementById(btn.getAttribute("data-reveal"));
      if (!input) { return; }
      btn.hidden = false;
      btn.addEventListener("click", function () {
        var show = input.type === "password";
        input.type = show ? "text" : "password";
        btn.setAttribute("aria-pressed", show ? "true" : "false");
        btn.textContent = show ? "Hide" : "Reveal";
      });
    });
    $all("[data-copy]").forEach(function (btn) {
      var input = document.getElementById(btn.getAttribute("data-copy"));
      var status = document.getElementById(btn.getAttribute("data-status"));
      if (!input) { return; }
      btn.hidden = false;
      btn.addEventListener("click", function () {
        copyText(input.value).then(function () {
          btn.textContent = "Copied";
          if (status) { status.textContent = "The key is on your clipboard."; status.className = "status status-ok"; }
          window.setTimeout(function () { btn.textContent = "Copy"; }, 2500);
        }, function () {
          if (status) {
            status.textContent = "Could not copy automatically: reveal the key and copy it by hand.";
            status.className = "status status-error";
          }
        });
      });
    });
  }

  /* Roll and revoke: open a <dialog> instead of following the link to the
     confirmation page (which stays the no-JS path). */
  function initDialogs() {
    $all("a[data-dialog]").forEach(function (link) {
      link.addEventListener("click", function (ev) {
        var dlg = document.getElementById(link.getAttribute("data-dialog"));
        if (!dlg || typeof dlg.showModal !== "function") { return; }
        ev.preventDefault();
        var form = $("form[data-action]", dlg);
        form.action = form.getAttribute("data-action").replace("__ID__", encodeURIComponent(link.getAttribute("data-key-id")));
        $all("[data-key-label]", dlg).forEach(function (el) { el.textContent = link.getAttribute("data-key-label"); });
        dlg.returnFocusTo = link;
        dlg.showModal();
        var first = $("input:not([type=hidden]), select", dlg) || $("button[type=submit]", dlg);
        if (first) { first.focus(); }
      });
    });
    $all("dialog").forEach(function (dlg) {
      $all("[data-close]", dlg).forEach(function (btn) {
        btn.addEventListener("click", function () { dlg.close(); });
      });
      dlg.addEventListener("close", function () {
        if (dlg.returnFocusTo) { dlg.returnFocusTo.focus(); }
      });
      dlg.addEventListener("click", function (ev) {
        if (ev.target === dlg) { dlg.close(); }  /* click on the backdrop */
      });
      $all("form", dlg).forEach(function (form) {
        form.addEventListener("submit", function () {
          $all("button[type=submit]", form).forEach(function (b) { b.disabled = true; });
        });
      });
    });
  }

  /* Filter: changing the state select applies it at once. */
  function initFilters() {
    $all("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { if (sel.form) { sel.form.requestSubmit ? sel.form.requestSubmit() : sel.form.submit(); } });
    });
  }

  /* Never submit a minting form twice (the server refuses a second one anyway). */
  function initSubmitOnce() {
    $all("form[method=post]").forEach(function (form) {
      if (form.closest("dialog")) { return; }
      form.addEventListener("submit", function () {
        window.setTimeout(function () {
          $all("button[type=submit]", form).forEach(function (b) { b.disabled = true; });
        }, 0);
      });
    });
  }

  function init() { initSecret(); initDialogs(); initFilters(); initSubmitOnce(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
