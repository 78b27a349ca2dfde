// Intervention Log: setting a pending outcome asks first ("Mark P123 as Saved ✓?"). Cancelled,
// the menu goes back to the outcome the row has, so the page never shows an unsaved choice.
document.addEventListener("htmx:confirm", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.matches(".outcome-form[data-confirm]")) return;
  event.preventDefault();
  const select = form.querySelector("select[name=outcome]");
  if (select.value === form.dataset.current) return;
  const label = select.options[select.selectedIndex].text;
  if (window.confirm(`Mark ${form.dataset.partner} as ${label}? You can undo it for 10 seconds.`)) {
    event.detail.issueRequest(true);
  } else {
    select.value = form.dataset.current;
  }
});
