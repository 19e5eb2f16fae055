-- Failed logins, kept 15 minutes, to throttle guessing per user name and per client address.
CREATE TABLE login_failures (
    id        INTEGER PRIMARY KEY,
    username  TEXT    NOT NULL,
    client_ip TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX login_failures_username ON login_failures (username, at);
CREATE INDEX login_failures_client ON login_failures (client_ip, at);
