// The person stream of /ws, shared by the OBS page and the control page's preview.
// Each message: 4-byte big-endian length of a colour JPEG, the colour JPEG, then a grey
// JPEG of the alpha matte. The two are joined here into real RGBA pixels (the colour is
// black wherever alpha is 0: the room is never sent), handed to onPerson as a canvas.
"use strict";
window.vbgFrames = 0;

window.vbgStream = function (onPerson) {
  const token = new URLSearchParams(location.search).get("token");
  const scratch = document.createElement("canvas").getContext("2d", {willReadFrequently: true});
  let busy = false;

  async function decode(buffer) {
    const colourLength = new DataView(buffer).getUint32(0);
    const [colour, alpha] = await Promise.all([
      createImageBitmap(new Blob([buffer.slice(4, 4 + colourLength)], {type: "image/jpeg"})),
      createImageBitmap(new Blob([buffer.slice(4 + colourLength)], {type: "image/jpeg"}))]);
    const {width, height} = colour;
    if (scratch.canvas.width !== width || scratch.canvas.height !== height) {
      scratch.canvas.width = width;
      scratch.canvas.height = height;
    }
    scratch.drawImage(alpha, 0, 0);
    const mask = scratch.getImageData(0, 0, width, height).data;
    scratch.drawImage(colour, 0, 0);
    const pixels = scratch.getImageData(0, 0, width, height);
    const rgba = pixels.data;
    for (let i = 3; i < rgba.length; i += 4) rgba[i] = mask[i - 1];
    scratch.putImageData(pixels, 0, 0);
    onPerson(scratch.canvas);
    window.vbgFrames += 1;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    const socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    socket.binaryType = "arraybuffer";
    socket.onmessage = async (event) => {
      if (busy) return;  // still drawing the last one: skip, stay current
      busy = true;
      try { await decode(event.data); } finally { busy = false; }
    };
    socket.onclose = () => setTimeout(connect, 1000);  // vbg restarted: pick it up again
  }
  connect();
};
