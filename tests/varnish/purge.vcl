vcl 4.1;

# Test cache: caches whatever the origin allows and accepts PURGE from loopback only
# (the pattern of varnish-cache doc/sphinx/users-guide/purging.rst).
# The harness replaces __BACKEND_PORT__ with the port of the origin it serves.

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
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
