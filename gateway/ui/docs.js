// Renders the served OpenAPI document with Redoc (loaded just before, from this origin).
/* global Redoc */
window.addEventListener("DOMContentLoaded", () => {
  Redoc.init("/openapi.json", { hideDownloadButton: false, disableSearch: true, expandResponses: "200,201,202" },
    document.getElementById("redoc"));
});
