// The light or dark theme: the system's (prefers-color-scheme) until the user picks one with the
// header's toggle; the pick is remembered in localStorage. A classic script in <head>, so the
// theme is set before the page is first painted.
"use strict";

(() => {
  const KEY = "emaki.theme";
  const root = document.documentElement;
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

  const chosen = () => {
    try {
      return localStorage.getItem(KEY);
    } catch {
      return null;  // storage refused (private mode): follow the system
    }
  };
  const current = () => chosen() || (systemDark.matches ? "dark" : "light");

  function apply() {
    const theme = current();
    root.dataset.theme = theme;
    const toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.textContent = theme === "dark" ? "Light theme" : "Dark theme";
      toggle.setAttribute("aria-pressed", String(theme === "dark"));
    }
  }

  apply();
  systemDark.addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", () => {
    apply();
    document.getElementById("theme-toggle").addEventListener("click", () => {
      try {
        localStorage.setItem(KEY, current() === "dark" ? "light" : "dark");
      } catch {
        root.dataset.theme = current() === "dark" ? "light" : "dark";  // this page only
        return;
      }
      apply();
    });
  });
})();
