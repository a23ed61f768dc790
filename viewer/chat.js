// Chat panel. Everything other people wrote is put on the page with textContent only:
// a message is text, never markup.

const MAX_LINES = 200; // DOM lines kept; older ones scroll away for good
const ERROR_SHOW_MS = 4000;
const NAME_KEY = "broadcaster.chat.name";

const $ = (id) => document.getElementById(id);

const ERROR_TEXT = {
  rate_limited: "Slow down: at most 5 messages every 10 seconds.",
  too_long: "That message is too long.",
  empty: "Write something first.",
};

function defaultName() {
  return `viewer-${Math.floor(1000 + Math.random() * 9000)}`;
}

function storedName() {
  try { return localStorage.getItem(NAME_KEY); } catch { return null; }
}

function storeName(name) {
  try { localStorage.setItem(NAME_KEY, name); } catch { /* private mode */ }
}

export class Chat {
  constructor(control) {
    this.control = control;
    this.log = $("chat-log");
    this.form = $("chat-form");
    this.nameInput = $("chat-name");
    this.textInput = $("chat-text");
    this.errorEl = $("chat-error");
    this.emptyEl = $("chat-empty");
    this.statusEl = $("chat-status");
    this.errorTimer = null;
    this.nameInput.value = storedName() || defaultName();
    this.nameInput.addEventListener("change", () => storeName(this.nameInput.value.trim()));
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
  }

  setOnline(online) {
    this.statusEl.textContent = online ? "connected" : "offline";
    this.statusEl.dataset.online = String(online);
  }

  submit() {
    const name = this.nameInput.value.trim();
    const text = this.textInput.value.trim();
    if (!name) { this.showError("Pick a name first."); this.nameInput.focus(); return; }
    if (!text) return;
    if (!this.control.send({ type: "chat", name, text })) {
      this.showError("Not connected; try again in a moment.");
      return;
    }
    storeName(name);
    this.textInput.value = "";
  }

  showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = false;
    clearTimeout(this.errorTimer);
    this.errorTimer = setTimeout(() => { this.errorEl.hidden = true; }, ERROR_SHOW_MS);
  }

  onError(msg) {
    const known = ERROR_TEXT[msg.code];
    if (known) this.showError(known);
  }

  history(messages) {
    this.log.replaceChildren();
    for (const m of messages || []) this.add(m, false);
    this.scrollToEnd(true);
  }

  add(msg, scroll = true) {
    if (typeof msg.name !== "string" || typeof msg.text !== "string") return;
    const nearEnd = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    const li = document.createElement("li");
    li.className = msg.mine ? "line mine" : "line";
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = msg.name;
    const text = document.createElement("span");
    text.className = "what";
    text.textContent = msg.text;
    if (typeof msg.at === "number") {
      li.title = new Date(msg.at).toLocaleTimeString();
    }
    li.append(name, text);
    this.log.append(li);
    while (this.log.childElementCount > MAX_LINES) this.log.firstElementChild.remove();
    this.emptyEl.hidden = this.log.childElementCount > 0;
    // Follow new lines unless the reader scrolled up to read older ones (own lines always).
    if (scroll) this.scrollToEnd(nearEnd || msg.mine);
  }

  scrollToEnd(yes) {
    if (yes) this.log.scrollTop = this.log.scrollHeight;
  }
}
