// Opens a WebSocket to the node's WAMP router and shows whether the handshake worked.
// For real WAMP use, load autobahn|js and connect to the same URL with realm "realm1".
(function () {
  var el = document.getElementById("wamp");
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  var ws = new WebSocket(url, ["wamp.2.json"]);
  ws.onopen = function () { el.textContent = "WAMP: router reachable at " + url; ws.close(); };
  ws.onerror = function () { el.textContent = "WAMP: could not reach " + url; };
})();
