-- title: Payment success by method
-- description: Charges asked for, succeeded, declined and flagged as fraud per card brand, and the share of decided charges that succeeded.
-- param since date = 1970-01-01: first day (the charge was asked for)
-- param until date = 9999-12-31: last day
SELECT card_brand,
       sum(attempts) AS attempts,
       sum(succeeded) AS succeeded,
       sum(declined) AS declined,
       sum(fraudulent) AS fraudulent,
       sum(pending) AS pending,
       CAST(sum(succeeded) AS DOUBLE)
           / nullif(sum(succeeded) + sum(declined) + sum(fraudulent), 0) AS success_rate
FROM payment_success
WHERE day BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
GROUP BY card_brand
ORDER BY card_brand
