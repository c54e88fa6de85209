-- title: Daily sales
-- description: Orders paid, revenue, refunds and average order value per day and currency.
-- param since date = 1970-01-01: first day (of payment)
-- param until date = 9999-12-31: last day
SELECT day, currency, orders, revenue_cents, refunds, refunded_cents, net_revenue_cents,
       average_order_cents
FROM sales_daily
WHERE day BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
ORDER BY day, currency
