// Re-renders <time data-local-time datetime="…Z"> elements in the viewer's local
// time, fi-FI style: "12.00" today, "21.11.2026 12.00" on other days. The server
// renders a UTC fallback, so the page is still correct without JavaScript.

const p = (n) => String(n).padStart(2, "0");
const now = new Date();

for (const el of document.querySelectorAll("time[data-local-time]")) {
  const d = new Date(el.getAttribute("datetime") || "");
  if (Number.isNaN(d.getTime())) continue;
  const time = `${p(d.getHours())}.${p(d.getMinutes())}`;
  const sameDay =
    d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  el.textContent = sameDay ? time : `${d.getDate()}.${d.getMonth() + 1}.${d.getFullYear()} ${time}`;
  el.title = d.toLocaleString();
}
