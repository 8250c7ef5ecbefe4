-- Usage per UTC day, kept beside the ledger in the same transactions: a limit's period (day, week, month, all
-- whole UTC days) is summed from at most 31 rows instead of every ledger entry in it. A reservation checks the
-- member's, the server's and the bot-wide usage; on a busy bot a month is hundreds of thousands of ledger rows
-- (measured before this: 200 reservations with monthly limits over 300k rows took 15 s on SQLite).
-- scope 'member': all of a member's entries in a server (a moderator's reset gives credits back);
-- 'server' (user_id 0) and 'global' (guild_id and user_id 0): what was spent, resets left out.
CREATE TABLE usage_daily (
    scope TEXT NOT NULL CHECK (scope IN ('member', 'server', 'global')),
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    day ${timestamp} NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (scope, guild_id, user_id, day)
);
INSERT INTO usage_daily (scope, guild_id, user_id, day, amount)
SELECT 'member', guild_id, user_id, ${utc_day_of_charged_at}, SUM(amount) FROM ledger
GROUP BY guild_id, user_id, ${utc_day_of_charged_at};
INSERT INTO usage_daily (scope, guild_id, user_id, day, amount)
SELECT 'server', guild_id, 0, ${utc_day_of_charged_at}, SUM(amount) FROM ledger WHERE reason <> 'reset'
GROUP BY guild_id, ${utc_day_of_charged_at};
INSERT INTO usage_daily (scope, guild_id, user_id, day, amount)
SELECT 'global', 0, 0, ${utc_day_of_charged_at}, SUM(amount) FROM ledger WHERE reason <> 'reset'
GROUP BY ${utc_day_of_charged_at};
