// Prompt-tag autocomplete (as A1111's tagcomplete extension): typing in a prompt box lists the
// server's tags (/api/tags: the shipped danbooru list and the workspace's tags/*.csv) that start
// with the word at the cursor; arrows choose, Enter or Tab (or a click) inserts `tag, ` with
// underscores as spaces and brackets escaped, Esc closes.
import { $, api, debounce, element } from "./core.js";

const SHOWN = 12;
const MIN_CHARS = 2;
// What ends a tag in A1111's prompt language: commas, closing brackets, alternation, new lines; an
// opening bracket too, unless it follows a letter of the tag (`star_(symbol)`, `star \(symbol`).
const SEPARATORS = /[,)\]}|\n]/;
const OPENING = /[([{]/;

const suggest = {
  area: null,     // the textarea the list belongs to
  tags: [],       // the rows shown
  index: -1,      // the highlighted row
  word: null,     // { start, end } of the word being completed in area.value
  latest: 0,      // only the newest answer is shown
};

// The word before the cursor: from the last separator up to the cursor, without leading spaces.
function wordAtCursor(area) {
  const end = area.selectionEnd;
  if (area.selectionStart !== end) return null;
  const before = area.value.slice(0, end);
  let start = end;
  const startsWord = (i) => i === 0 || /[\s,|]/.test(before[i - 1]) || OPENING.test(before[i - 1]);
  while (start > 0 && !SEPARATORS.test(before[start - 1])
         && !(OPENING.test(before[start - 1]) && before[start - 2] !== "\\" && startsWord(start - 1))) start -= 1;
  while (start < end && /\s/.test(before[start])) start += 1;
  const text = before.slice(start).replace(/\\/g, "");  // an escaped bracket is the bracket
  if (text.length < MIN_CHARS || text.startsWith("<") || /:\s*[\d.]*$/.test(text)) return null;  // network tags, weights
  return { start, end, text };
}

// A1111 users write tags with spaces; brackets in a tag are literal, so they are escaped.
export function tagText(tag) {
  return tag.replace(/_/g, " ").replace(/([()[\]])/g, "\\$1");
}

async function lookUp(area) {
  const word = wordAtCursor(area);
  const mine = ++suggest.latest;
  if (!word) {
    hide();
    return;
  }
  let rows;
  try {
    rows = await api(`/api/tags?${new URLSearchParams({ q: word.text, limit: String(SHOWN) })}`);
  } catch {
    return;  // no suggestions is not worth an error message
  }
  if (mine !== suggest.latest || document.activeElement !== area) return;
  if (!rows.length) {
    hide();
    return;
  }
  show(area, word, rows);
}

function show(area, word, rows) {
  Object.assign(suggest, { area, word, tags: rows, index: 0 });
  const list = $("tag-suggest");
  list.replaceChildren(...rows.map((row, i) => {
    const item = element("li", `cat-${row.category}`);
    item.setAttribute("role", "option");
    item.dataset.tag = row.tag;
    item.append(element("span", "tag", tagText(row.tag).replace(/\\/g, "")), element("span", "count", formatCount(row.count)));
    item.addEventListener("mousedown", (event) => {
      event.preventDefault();  // keep the focus in the prompt
      suggest.index = i;
      accept();
    });
    return item;
  }));
  highlight();
  const box = area.getBoundingClientRect();
  list.style.left = `${box.left + window.scrollX}px`;
  list.style.top = `${box.bottom + window.scrollY}px`;
  list.hidden = false;
}

function formatCount(count) {
  if (count >= 1e6) return `${(count / 1e6).toFixed(1)}M`;
  if (count >= 1e3) return `${Math.round(count / 1e3)}k`;
  return String(count);
}

function highlight() {
  const items = $("tag-suggest").children;
  for (let i = 0; i < items.length; i += 1) items[i].setAttribute("aria-selected", String(i === suggest.index));
  items[suggest.index]?.scrollIntoView({ block: "nearest" });
}

function hide() {
  $("tag-suggest").hidden = true;
  suggest.area = null;
  suggest.tags = [];
}

// Puts the highlighted tag in place of the word, followed by ", ".
function accept() {
  const { area, word } = suggest;
  const row = suggest.tags[suggest.index];
  if (!area || !row) return;
  const head = `${area.value.slice(0, word.start)}${tagText(row.tag)}, `;
  const after = area.value.slice(word.end).replace(/^\s*,\s*/, "");
  area.value = head + after;
  area.setSelectionRange(head.length, head.length);
  hide();
  window.emaki.tagInserts += 1;
  area.dispatchEvent(new Event("input"));  // the token counter (the new word is empty: no list)
}

function onKey(event) {
  if ($("tag-suggest").hidden || suggest.area !== event.target) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;  // Ctrl+Enter still generates
  const count = suggest.tags.length;
  if (event.key === "ArrowDown") suggest.index = (suggest.index + 1) % count;
  else if (event.key === "ArrowUp") suggest.index = (suggest.index - 1 + count) % count;
  else if (event.key === "Enter" || event.key === "Tab") accept();
  else if (event.key === "Escape") hide();
  else return;
  event.preventDefault();
  event.stopPropagation();
  highlight();
}

export function setUpTagComplete() {
  for (const area of document.querySelectorAll("textarea.tag-input")) {
    const look = debounce(() => lookUp(area), 120);
    area.addEventListener("input", (event) => {
      if (event.isTrusted || event.inputType) look();  // not our own insertion's event
    });
    area.addEventListener("keydown", onKey);
    area.addEventListener("blur", () => setTimeout(() => { if (suggest.area === area) hide(); }, 100));
  }
}
