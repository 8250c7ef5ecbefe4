-- A result split over several messages (Discord's per-request cap): the ids of the messages after the first,
-- as a JSON list, so that Delete removes the whole result.
ALTER TABLE jobs ADD COLUMN result_extra_message_ids TEXT;
