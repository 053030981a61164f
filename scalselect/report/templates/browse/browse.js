// The selection browser (scalselect/report/browse.py writes the data files this reads).
// Everything the page shows follows from the URL's hash (#view=kept&budget=32&...): the
// controls and links only change the hash, so any view can be bookmarked or shared.
// Data files are scripts calling ScalBrowse.samples/page/ids/tokens: pages opened from
// file:// may not fetch() files, but may load scripts.
"use strict";

const ScalBrowse = (() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const ROWS = 50; // rows per screen
  const DEFAULTS = {view: "all", budget: "any", method: "any", source: "any", order: "desc", id: "", screen: "1"};
  // The dropped view lists the worst first, every other view the best first, whether or
  // not the address says so; an order in the address (the Score control) overrides it.
  const defaultOrder = (view) => (view === "dropped" ? "asc" : "desc");
  let columns = null; // samples.js: score, source, membership bits by rank position
  let ids = null; // ids.js, loaded on the first search by id
  const pages = new Map(); // page number -> entries (page-NNNNN.js)
  const requested = new Set();
  // The attention gallery's overlays, written beside the browser (results/<run>/plots/) by
  // the gallery's job; where they are absent (not drawn yet, or a copy of the page without
  // the plots) no row shows one.
  const TOKENS = "../plots/attention_tokens/";
  let overlays = new Set();
  let state = {...DEFAULTS};
  let matched = new Int32Array(0);

  function decode(text, Type) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function load(src) {
    if (requested.has(src)) return;
    requested.add(src);
    const script = document.createElement("script");
    script.src = src;
    script.onerror = () => { document.getElementById("note").textContent = `Cannot load ${src}.`; };
    document.head.appendChild(script);
  }

  const has = (pos, column) => (columns.mask[pos * columns.maskBytes + (column >> 3)] >> (column & 7)) & 1;

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state = {...DEFAULTS};
    for (const key of Object.keys(DEFAULTS)) if (params.has(key)) state[key] = params.get(key);
    if (!params.has("order")) state.order = defaultOrder(state.view);
    for (const select of document.querySelectorAll("#controls select")) select.value = state[select.name];
    document.querySelector("#search input").value = state.id;
  }

  function setHash(changes) {
    const next = {...state, screen: "1", ...changes};
    if ("view" in changes && !("order" in changes)) next.order = defaultOrder(next.view);
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(next)) {
      const fallback = key === "order" ? defaultOrder(next.view) : DEFAULTS[key];
      if (value !== fallback) params.set(key, value);
    }
    location.hash = params.toString();
  }

  // The ScalSelect and random subsets that the difference views compare.
  function pair() {
    const pairs = config.differences;
    return pairs.find((p) => (state.budget === "any" || String(p.budget) === state.budget) &&
      (!state.method.startsWith("random") || p.random === state.method)) || pairs[0];
  }

  function test() {
    if (state.view === "kept" || state.view === "dropped") {
      const chosen = [];
      config.subsets.forEach((s, c) => {
        if ((state.budget === "any" || String(s.budget) === state.budget) &&
            (state.method === "any" || s.method === state.method)) chosen.push(c);
      });
      const kept = state.view === "kept";
      return (pos) => chosen.some((c) => has(pos, c)) === kept;
    }
    if (state.view.startsWith("only-")) {
      const p = pair();
      const [ours, theirs] = state.view === "only-scalselect"
        ? [p.scalselect_column, p.random_column] : [p.random_column, p.scalselect_column];
      return (pos) => has(pos, ours) && !has(pos, theirs);
    }
    return () => true;
  }

  function filter() {
    const source = state.source === "any" ? -1 : Number(state.source);
    const keep = test();
    const out = new Int32Array(config.n);
    let k = 0;
    for (let pos = 0; pos < config.n; pos++) {
      if (source >= 0 && columns.source[pos] !== source) continue;
      if (state.id && ids[pos] !== state.id) continue;
      if (keep(pos)) out[k++] = pos;
    }
    matched = out.subarray(0, k);
    if (state.order === "asc") matched.reverse();
  }

  function describe() {
    const parts = [];
    if (state.view.startsWith("only-")) {
      const p = pair();
      parts.push(`comparing ${config.subsets[p.scalselect_column].label} with ${config.subsets[p.random_column].label}`);
    }
    if (state.id) parts.push(`id "${state.id}"`);
    return parts.length ? `(${parts.join("; ")})` : "";
  }

  function render() {
    if (!columns || (state.id && !ids)) return;
    filter();
    const screens = Math.max(1, Math.ceil(matched.length / ROWS));
    const screen = Math.min(Math.max(1, Number(state.screen) || 1), screens);
    document.getElementById("count").textContent = `${matched.length.toLocaleString("en")} samples match`;
    document.getElementById("note").textContent = describe();
    for (const pager of document.querySelectorAll(".pager")) renderPager(pager, screen, screens);
    const list = document.getElementById("rows");
    list.replaceChildren();
    for (const pos of matched.subarray((screen - 1) * ROWS, screen * ROWS)) {
      list.appendChild(row(pos));
      const page = Math.floor(pos / config.pageSize);
      if (!pages.has(page)) load(`data/page-${String(page).padStart(5, "0")}.js`);
    }
  }

  function renderPager(pager, screen, screens) {
    pager.replaceChildren();
    const go = (label, to) => {
      const button = document.createElement("button");
      button.textContent = label;
      button.disabled = to < 1 || to > screens || to === screen;
      button.onclick = () => setHash({screen: String(to)});
      pager.appendChild(button);
    };
    go("« first", 1);
    go("‹ previous", screen - 1);
    const where = document.createElement("span");
    where.textContent = ` screen ${screen.toLocaleString("en")} of ${screens.toLocaleString("en")} `;
    pager.appendChild(where);
    go("next ›", screen + 1);
    go("last »", screens);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A method's or a source's colour, as in the figures (scalselect.report.style), on its swatch.
  function colored(node, color) {
    node.style.setProperty("--color", color);
    return node;
  }

  function row(pos) {
    const item = element("li", "sample");
    item.dataset.pos = pos;
    item.appendChild(element("div", "images"));
    const body = element("div", "body");
    const head = element("div", "head");
    head.appendChild(element("span", "rank", `#${(pos + 1).toLocaleString("en")}`));
    head.appendChild(element("span", "score", `score ${columns.score[pos].toPrecision(6)}`));
    const source = config.sources[columns.source[pos]];
    head.appendChild(colored(element("span", "source", source.name), source.color));
    head.appendChild(element("span", "id"));
    body.appendChild(head);
    const badges = element("div", "badges");
    config.subsets.forEach((s, c) => {
      if (has(pos, c)) badges.appendChild(colored(element("span", "badge", s.label), config.methodColors[s.method]));
    });
    if (!badges.childElementCount) badges.appendChild(element("span", "badge none", "in no selection"));
    body.appendChild(badges);
    body.appendChild(element("div", "messages", "loading…"));
    item.appendChild(body);
    const entries = pages.get(Math.floor(pos / config.pageSize));
    if (entries) fill(item, entries[pos % config.pageSize]);
    return item;
  }

  function fill(item, entry) {
    item.querySelector(".id").textContent = `id ${JSON.stringify(entry.id)} · dataset index ${entry.index}`;
    const images = item.querySelector(".images");
    images.replaceChildren();
    for (const image of entry.images) {
      if (!image.src) {  // embedded in the dataset, and no thumbnail made for this rank
        images.appendChild(element("span", "missing", `embedded image ${image.name}: no thumbnail at this rank`));
        continue;
      }
      const link = element("a");
      link.href = image.src;
      link.target = "_blank";
      const img = element("img", image.thumb ? "thumb" : "original");
      img.loading = "lazy";
      img.alt = decodeURIComponent(image.src);
      img.onload = () => {
        img.dataset.naturalWidth = img.naturalWidth;
        img.title = `${img.alt} (${img.naturalWidth}×${img.naturalHeight} px)`;
      };
      img.onerror = () => link.replaceChildren(element("span", "missing",
        `image not reachable from this page: ${img.alt}`));
      img.src = image.thumb || image.src;
      link.appendChild(img);
      images.appendChild(link);
    }
    if (!entry.images.length) images.appendChild(element("span", "missing", "text only"));
    if (overlays.has(entry.index)) {  // a sample of the attention gallery: its kept tokens
      const figure = element("figure", "tokens");
      const img = element("img", "tokens");
      img.alt = "kept vision tokens (dropped ones dimmed)";
      img.onload = () => { img.dataset.naturalWidth = img.naturalWidth; };
      img.src = `${TOKENS}${entry.index}.png`;
      figure.appendChild(img);
      figure.appendChild(element("figcaption", "", img.alt));
      images.appendChild(figure);
    }
    const messages = item.querySelector(".messages");
    messages.replaceChildren();
    for (const [role, text] of entry.messages) {
      const message = element("p", `message ${role}`);
      message.appendChild(element("b", "", `${role} `));
      message.appendChild(document.createTextNode(text));
      messages.appendChild(message);
    }
  }

  function start() {
    for (const select of document.querySelectorAll("#controls select")) {
      select.onchange = () => setHash({[select.name]: select.value});
    }
    document.getElementById("search").onsubmit = (event) => {
      event.preventDefault();
      setHash({id: document.querySelector("#search input").value.trim()});
    };
    window.addEventListener("hashchange", () => { readHash(); if (state.id) load("data/ids.js"); render(); });
    readHash();
    if (state.id) load("data/ids.js");
    const overlayIndex = document.createElement("script");  // optional: no note when absent
    overlayIndex.src = `${TOKENS}index.js`;
    document.head.appendChild(overlayIndex);
    render();
  }

  return {
    samples(data) {
      columns = {
        score: decode(data.score, Float32Array),
        source: decode(data.source, data.sourceBytes === 1 ? Uint8Array : Uint16Array),
        mask: decode(data.mask, Uint8Array),
        maskBytes: data.maskBytes,
      };
      start();
    },
    page(number, entries) {
      pages.set(number, entries);
      for (const item of document.querySelectorAll("#rows .sample")) {
        const pos = Number(item.dataset.pos);
        if (Math.floor(pos / config.pageSize) === number) fill(item, entries[pos % config.pageSize]);
      }
    },
    ids(values) {
      ids = values.map((id) => (id === null ? null : String(id)));
      render();
    },
    tokens(indices) {
      overlays = new Set(indices);
      render();
    },
  };
})();
