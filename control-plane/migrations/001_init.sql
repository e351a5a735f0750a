-- Accounts. A guest has a device id and no email; upgrading adds email and password.
CREATE TABLE users (
  id            uuid PRIMARY KEY,
  email         text UNIQUE,
  password_hash text,
  device_id     text UNIQUE,
  display_name  text NOT NULL DEFAULT '',
  roles         text[] NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CHECK (email IS NULL OR email = lower(email)),
  CHECK ((email IS NULL) = (password_hash IS NULL))
);

-- Reserved for OAuth sign-in (a later issue): one row per provider identity.
CREATE TABLE oauth_connections (
  provider   text NOT NULL,
  subject    text NOT NULL,
  user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (provider, subject)
);
CREATE INDEX oauth_connections_user ON oauth_connections (user_id);

-- One family per login session: every rotation adds a token to it, reuse of a spent token
-- revokes the whole family. expires_at is absolute; rotation never extends it.
CREATE TABLE refresh_families (
  id             uuid PRIMARY KEY,
  user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  revoked_at     timestamptz,
  revoked_reason text
);
CREATE INDEX refresh_families_user ON refresh_families (user_id) WHERE revoked_at IS NULL;

-- Only the SHA-256 of a refresh token is stored.
CREATE TABLE refresh_tokens (
  token_hash bytea PRIMARY KEY,
  family_id  uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  used_at    timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- A user's save slots: the current version and its metadata.
CREATE TABLE save_slots (
  user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  slot       text NOT NULL,
  version    bigint NOT NULL,
  size       bigint NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (user_id, slot)
);

-- Every version of every slot that is kept. object_version is the S3 version id of the blob;
-- a restore points a new version at an old blob, so several rows may share one.
CREATE TABLE save_versions (
  user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  slot             text NOT NULL,
  version          bigint NOT NULL,
  object_key       text NOT NULL,
  object_version   text NOT NULL,
  size             bigint NOT NULL,
  stored_size      bigint NOT NULL,
  checksum         text NOT NULL,
  device_id        text NOT NULL DEFAULT '',
  game_version     text NOT NULL DEFAULT '',
  engine_version   text NOT NULL DEFAULT '',
  restored_from    bigint,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, slot, version)
);

-- Who did what, for security review: logins, refresh reuse, logouts, deletions, restores.
CREATE TABLE audit_log (
  id       bigserial PRIMARY KEY,
  at       timestamptz NOT NULL DEFAULT now(),
  user_id  uuid,
  actor_id uuid,
  action   text NOT NULL,
  address  text,
  data     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_user ON audit_log (user_id, at);
