// OBS's Browser Source: the person over a transparent page (real alpha, no chroma key).
"use strict";
const canvas = document.getElementById("person");
const context = canvas.getContext("2d", {willReadFrequently: true});

window.vbgStream((person) => {
  if (canvas.width !== person.width || canvas.height !== person.height) {
    canvas.width = person.width;
    canvas.height = person.height;
  }
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(person, 0, 0);
});
