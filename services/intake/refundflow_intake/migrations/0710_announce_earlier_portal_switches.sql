-- The notifier leaves the portal link out of customer emails only once intake has told it the portal is off
-- (notification_settings.configured portal_enabled): merchants that switched it off before are marked, and
-- announced once at start-up (notification_settings.announce_earlier_portal_switches). A switch from now on is
-- announced with it.
ALTER TABLE merchants ADD COLUMN portal_switch_unannounced boolean NOT NULL DEFAULT false;
UPDATE merchants SET portal_switch_unannounced = true WHERE NOT portal_enabled;
