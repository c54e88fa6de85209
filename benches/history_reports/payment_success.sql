-- Payments per card brand, and the share that succeeded.
SELECT i.data->'card'->>'brand' AS brand,
       count(*) AS payments,
       sum(CASE WHEN o.type = 'payment.completed' THEN 1 ELSE 0 END) AS succeeded,
       avg(CASE WHEN o.type = 'payment.completed' THEN 1.0 ELSE 0.0 END) AS success_rate
FROM events i
JOIN events o ON o.aggregate_id = i.aggregate_id
WHERE i.type = 'payment.initiated' AND o.type IN ('payment.completed', 'payment.failed')
GROUP BY 1
ORDER BY 1
