// tincan demo site: this file is served precompressed (app.js.gz, app.js.zst) when the browser
// accepts it. It marks the page so a headless browser test can see that scripts ran.
(function () {
  "use strict";

  // Words to show that the script came through intact, whatever the content coding.
  var words = [
    "gzip", "zstd", "brotli", "identity", "sendfile", "range", "etag", "last-modified",
    "vary", "accept-encoding", "keep-alive", "pipelining", "listing", "redirect"
  ];

  function describe(list) {
    var out = [];
    for (var i = 0; i < list.length; i++) {
      out.push(list[i].toUpperCase().charAt(0) + list[i].slice(1));
    }
    return out.join(", ");
  }

  function mark() {
    var status = document.getElementById("script-status");
    if (!status) {
      return;
    }
    status.textContent = "Scripts ran: app.js arrived intact (" + words.length + " words: " +
      describe(words) + ").";
    status.setAttribute("data-ok", "yes");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mark);
  } else {
    mark();
  }

  // Padding comments below keep this file above the 1 KiB threshold for compression, so the
  // precompressed sidecars are worth having. tincan compresses text on the fly too, but a
  // sidecar made once at build time with the best settings beats that on every request.
  // ------------------------------------------------------------------------------------------
  // ------------------------------------------------------------------------------------------
})();
