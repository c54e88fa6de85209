-- Units shipped per product over its average stock on hand at the end of each day it moved.
WITH moves AS (
    SELECT data->>'product_id' AS product_id,
           date_trunc('day', occurred_at) AS moved_day,
           sum(CASE WHEN type = 'inventory.adjusted' THEN CAST(data->>'delta' AS BIGINT)
                    ELSE -CAST(data->>'quantity' AS BIGINT) END) AS net,
           sum(CASE WHEN type = 'inventory.deducted' THEN CAST(data->>'quantity' AS BIGINT)
                    ELSE 0 END) AS shipped
    FROM events
    WHERE type IN ('inventory.adjusted', 'inventory.deducted')
    GROUP BY 1, 2
), daily AS (
    SELECT product_id, shipped,
           sum(net) OVER (PARTITION BY product_id ORDER BY moved_day) AS on_hand
    FROM moves
)
SELECT product_id,
       sum(shipped) AS shipped,
       avg(CAST(on_hand AS DOUBLE)) AS average_on_hand,
       CAST(sum(shipped) AS DOUBLE) / NULLIF(avg(CAST(on_hand AS DOUBLE)), 0) AS turnover
FROM daily
GROUP BY product_id
ORDER BY turnover DESC, product_id
LIMIT 20
