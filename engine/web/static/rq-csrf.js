// Loaded into rq-dashboard's pages: its jQuery POSTs carry the session's CSRF token.
(function () {
  "use strict";
  var token = document.currentScript && document.currentScript.getAttribute("data-csrf");
  if (token && window.jQuery) {
    window.jQuery.ajaxSetup({ headers: { "X-CSRF-Token": token } });
  }
})();
