// The console's small progressive enhancements. Every page works without this file: forms post, a
// confirmation page stands in for the dialog, and all snippets are shown at once instead of in tabs.
(() => {
  "use strict";
  document.documentElement.classList.add("js");

  // --- confirmation dialog for forms marked data-confirm (toggle inference, revoke a key) ---------------
  const dialog = document.getElementById("confirm-dialog");
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!dialog || typeof dialog.showModal !== "function") return; // the server asks instead
    event.preventDefault();
    dialog.querySelector("[data-confirm-title]").textContent = form.dataset.confirmTitle || "Are you sure?";
    dialog.querySelector("[data-confirm-text]").textContent = form.dataset.confirm;
    dialog.querySelector("[data-confirm-ok]").textContent = form.dataset.confirmAction || "Confirm";
    dialog.returnValue = "";
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "ok") return;
        const confirm = form.querySelector("input[name=confirm]");
        if (confirm) confirm.value = "on"; // tells the server the restart was confirmed
        form.submit(); // does not fire "submit" again
      },
      { once: true },
    );
    dialog.showModal();
  });

  // --- live progress of a restart job: poll the JSON API until the job is done ----------------------------
  const job = document.getElementById("restart-job");
  if (job && job.dataset.pollUrl) {
    const labels = JSON.parse(document.getElementById("step-labels").textContent);
    const step = job.querySelector("[data-job-step]");
    const percent = job.querySelector("[data-job-percent]");
    const bar = job.querySelector("[data-job-progress]");
    const poll = async () => {
      try {
        const response = await fetch(job.dataset.pollUrl, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        if (response.ok) {
          const current = (await response.json()).job;
          if (current) {
            // A toggle during the restart chains a new job; the API then answers with that one.
            job.dataset.job = current.id;
            job.dataset.state = current.state;
            step.textContent = labels[current.step] || current.step;
            percent.textContent = `${current.progress}%`;
            bar.value = current.progress;
            if (current.state === "succeeded" || current.state === "failed") {
              // Reload to show the new state, the retry button or the error, all rendered by the server.
              setTimeout(() => window.location.reload(), 700);
              return;
            }
          }
        }
      } catch (error) {
        // A network hiccup: keep polling, the next answer catches up.
      }
      setTimeout(poll, 600);
    };
    setTimeout(poll, 400);
  }

  // --- snippet tabs ----------------------------------------------------------------------------------------
  document.querySelectorAll(".example").forEach((example) => {
    const show = (lang) => {
      example.querySelectorAll("[data-tab]").forEach((tab) => {
        tab.setAttribute("aria-selected", String(tab.dataset.tab === lang));
      });
      example.querySelectorAll(".snippet").forEach((snippet) => {
        snippet.hidden = snippet.dataset.lang !== lang;
      });
    };
    example.querySelectorAll("[data-tab]").forEach((tab) => {
      tab.addEventListener("click", () => show(tab.dataset.tab));
    });
    show("python");
  });

  // --- copy buttons ------------------------------------------------------------------------------------------
  const copy = async (text, button) => {
    try {
      await navigator.clipboard.writeText(text);
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1200);
    } catch (error) {
      // No clipboard access (plain http on another host): select the text so Ctrl+C works.
      const code = button.parentElement.querySelector("code");
      if (code) window.getSelection().selectAllChildren(code);
    }
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy], [data-copy-target]");
    if (!button) return;
    if (button.dataset.copy !== undefined) copy(button.dataset.copy, button);
    else copy(button.parentElement.querySelector("code").textContent, button);
  });
})();
