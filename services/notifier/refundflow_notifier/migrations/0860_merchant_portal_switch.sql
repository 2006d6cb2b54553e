-- Whether the merchant's customer portal is on, as intake last announced it: off, customer emails carry no link, not
-- even the decision's link a processor's outcome carries. A merchant intake has not told of yet has it on, as before.
ALTER TABLE merchant_settings ADD COLUMN portal_enabled boolean NOT NULL DEFAULT true;
