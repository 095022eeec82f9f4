// Weekly schedule editor: each day's "copy" button fills the other weekdays
// (or the other weekend day) with that day's periods, so a homeowner types a
// working day once. Nothing is sent until the form is saved.
//
// Contract with templates/site/schedule.html: button[data-copy-from=<input id>]
// [data-copy-to="<input id> <input id> …"], rendered hidden so the page
// without JavaScript shows no button that does nothing.

for (const button of document.querySelectorAll("button[data-copy-from]")) {
  const from = document.getElementById(button.dataset.copyFrom);
  if (!from) continue;
  button.hidden = false;
  button.addEventListener("click", () => {
    for (const id of (button.dataset.copyTo || "").split(" ")) {
      const to = id && document.getElementById(id);
      if (to && to !== from) to.value = from.value;
    }
  });
}
