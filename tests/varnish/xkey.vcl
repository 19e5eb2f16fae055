vcl 4.1;

# Test cache with tag purges: the origin labels each response with `xkey: <asset ID>` (several
# IDs separated by spaces), and `PURGE /` with an `xkey-purge: <ID> <ID> …` header removes every
# object carrying one of them, answering `200 Invalidated <n> objects` (the pattern of
# varnish-modules' vmod_xkey documentation). PURGE without that header purges the URL as
# tests/varnish/purge.vcl does. The harness replaces __BACKEND_PORT__ with the origin's port.

import xkey;

backend default {
    .host = "127.0.0.1";
    .port = "__BACKEND_PORT__";
}

acl purge {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (!client.ip ~ purge) {
            return (synth(405, "Not allowed."));
        }
        if (req.http.xkey-purge) {
            set req.http.n-gone = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
        }
        return (purge);
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
