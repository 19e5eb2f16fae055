vcl 4.1;

# Test cache with prefix bans: `BAN <path>` with the site's `Host` and an `X-Ban-Url: ^<path>`
# header (a regular expression the app anchors and escapes) bans every object of that host whose
# URL matches. The ban only tests `obj.*` (the URL and host are copied onto each object when it
# is fetched), so the ban lurker can clear matching objects in the background instead of each
# one being tested on its next request. PURGE purges one URL as tests/varnish/purge.vcl does.
# The harness replaces __BACKEND_PORT__ with the origin's port.

import std;

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
        return (purge);
    }
    if (req.method == "BAN") {
        if (!client.ip ~ purge) {
            return (synth(405, "Not allowed."));
        }
        if (!req.http.host || !req.http.x-ban-url) {
            return (synth(400, "BAN needs Host and X-Ban-Url."));
        }
        if (std.ban("obj.http.x-host == " + req.http.host + " && obj.http.x-url ~ " + req.http.x-ban-url)) {
            return (synth(200, "Ban added"));
        }
        return (synth(400, std.ban_error()));
    }
}

sub vcl_backend_response {
    # What the bans test, on the object itself (lurker-friendly).
    set beresp.http.x-url = bereq.url;
    set beresp.http.x-host = bereq.http.host;
}

sub vcl_deliver {
    unset resp.http.x-url;
    unset resp.http.x-host;
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
