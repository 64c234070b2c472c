// The prompt boxes' token counters (/api/tokens): the count against the limit, and where each
// 75-token chunk starts when the prompt needs more than one.
import { api, debounce, DEBOUNCE_MS } from "./core.js";

// Returns a function that recounts now; typing recounts after a pause.
export function tokenCounter(textarea, output, negative) {
  let latest = 0;  // only the newest answer is shown, whatever order they arrive in
  async function update() {
    const mine = ++latest;
    try {
      const count = await api("/api/tokens", { method: "POST", body: { prompt: textarea.value, negative } });
      if (mine === latest) renderTokens(output, count);
    } catch (error) {
      if (mine === latest) output.textContent = `tokens: ${error.message}`;
    }
  }
  textarea.addEventListener("input", debounce(update, DEBOUNCE_MS));
  return update;
}

function renderTokens(output, count) {
  output.replaceChildren();
  const total = document.createElement("span");
  total.className = "count";
  total.textContent = `${count.tokens}/${count.limit}`;
  total.title = count.summary;
  output.append(total);
  if (count.chunks.length > 1) {
    // Each 75-token chunk is encoded separately: show where one ends and the next starts.
    const list = document.createElement("ol");
    list.className = "chunks";
    for (const chunk of count.chunks) {
      const item = document.createElement("li");
      item.textContent = `chunk ${chunk.index + 1} (${chunk.tokens} tokens) starts at: ${chunk.text}`;
      item.title = chunk.text;
      list.append(item);
    }
    output.append(list);
  }
}
