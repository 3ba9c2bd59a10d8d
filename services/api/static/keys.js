// j / k move the focus to the next / previous session (list page) or thread (session page).
document.addEventListener("keydown", (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const typing = event.target.closest("input, textarea, select");
  if (typing || (event.key !== "j" && event.key !== "k")) return;
  const items = Array.from(document.querySelectorAll("[data-nav]"));
  if (items.length === 0) return;
  const at = items.indexOf(document.activeElement);
  const next = event.key === "j" ? Math.min(at + 1, items.length - 1) : Math.max(at - 1, 0);
  items[next].focus();
  items[next].scrollIntoView({ block: "nearest" });
  event.preventDefault();
});
