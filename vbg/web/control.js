// The control page: live settings through /api/state, and a small preview of the output.
// Every element that shows data is built with DOM properties and textContent, never markup.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
const $ = (id) => document.getElementById(id);
let state = null;

async function send(change) {
  const response = await fetch(withToken("/api/state"), {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(change)});
  const body = await response.json();
  $("error").textContent = response.ok ? "" : body.error;
  if (response.ok) show(body);
}

function thumbButton(name) {
  const button = document.createElement("button");
  button.dataset.name = name;
  button.title = name;
  const image = document.createElement("img");
  image.alt = name;
  image.src = withToken("/api/thumb?name=" + encodeURIComponent(name));
  const caption = document.createElement("span");
  caption.textContent = name;
  button.append(image, caption);
  button.onclick = () => send({mode: "image", background: name});
  return button;
}

function noBackgrounds() {
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.textContent = "No backgrounds to choose from: start vbg with --backgrounds DIR " +
    "(a folder of images or videos) to pick one here.";
  return hint;
}

function show(next) {
  const backgroundsChanged = !state || state.backgrounds.join("\n") !== next.backgrounds.join("\n");
  state = next;
  $("status").textContent = `${state.fps.toFixed(1)} fps · ${state.viewers} viewer(s) of the stream`;
  document.querySelectorAll("#modes button").forEach(
    (b) => b.classList.toggle("active", b.dataset.mode === state.mode));
  if (backgroundsChanged) {
    $("thumbs").replaceChildren(...(state.backgrounds.length ? state.backgrounds.map(thumbButton) : [noBackgrounds()]));
  }
  document.querySelectorAll("#thumbs button").forEach(
    (b) => b.classList.toggle("active", state.mode === "image" && b.dataset.name === state.background));
  $("blur").disabled = state.mode !== "blur";  // the strength only shows in blur mode
  for (const key of ["blur", "smoothing", "light_wrap"]) {
    if (document.activeElement !== $(key)) $(key).value = state[key];
    $(`${key}-value`).textContent = state[key];
  }
  $("unmix").checked = state.unmix;
  $("mirror").checked = state.mirror;
  $("color").value = state.color;
}

// The preview: the streamed person (the stream never carries the room) over the chosen background.
const preview = $("preview").getContext("2d");
const backdrop = new Image();
let backdropName = null;

function drawBackground(width, height) {
  if (state && state.mode === "color") {
    preview.fillStyle = state.color;
    preview.fillRect(0, 0, width, height);
  } else if (state && state.mode === "image" && state.background) {
    if (backdropName !== state.background) {
      backdropName = state.background;
      backdrop.src = withToken("/api/thumb?name=" + encodeURIComponent(state.background));
    }
    if (backdrop.complete && backdrop.naturalWidth) {
      const scale = Math.max(width / backdrop.naturalWidth, height / backdrop.naturalHeight);
      const w = backdrop.naturalWidth * scale, h = backdrop.naturalHeight * scale;
      preview.drawImage(backdrop, (width - w) / 2, (height - h) / 2, w, h);
    }
  } else {  // blur: the blurred room is not streamed; a neutral backdrop stands in, and the caption says so
    preview.fillStyle = "#4a4f5c";
    preview.fillRect(0, 0, width, height);
  }
}

// What the preview cannot show, said on it: in blur mode the output has the room blurred behind you.
function caption(width) {
  if (!state || state.mode !== "blur") return;
  preview.font = "12px sans-serif";
  const text = "the room, blurred, goes here (not streamed to this page)";
  preview.fillStyle = "rgba(0, 0, 0, 0.6)";
  preview.fillRect(0, 0, Math.min(width, preview.measureText(text).width + 12), 20);
  preview.fillStyle = "#fff";
  preview.fillText(text, 6, 14);
}

window.vbgStream((person) => {
  const canvas = preview.canvas;
  const height = Math.round(canvas.width * person.height / person.width);
  if (canvas.height !== height) canvas.height = height;
  drawBackground(canvas.width, canvas.height);
  preview.drawImage(person, 0, 0, canvas.width, canvas.height);
  caption(canvas.width);
});

document.querySelectorAll("#modes button").forEach((b) => b.onclick = () => send({mode: b.dataset.mode}));
$("blur").onchange = () => send({blur: Number($("blur").value)});
$("smoothing").onchange = () => send({smoothing: Number($("smoothing").value)});
$("light_wrap").onchange = () => send({light_wrap: Number($("light_wrap").value)});
$("mirror").onchange = () => send({mirror: $("mirror").checked});
$("unmix").onchange = () => send({unmix: $("unmix").checked});
$("color").onchange = () => send({mode: "color", color: $("color").value});
$("obs-url").textContent = new URL(withToken("/obs"), location.href).href;

async function poll() {
  let response;
  try {
    response = await fetch(withToken("/api/state"));
  } catch (e) {
    $("status").textContent = "vbg is not running";
    return;
  }
  if (response.ok) show(await response.json());  // a fault in showing it is reported, not taken for "not running"
}
poll();
setInterval(poll, 1000);
