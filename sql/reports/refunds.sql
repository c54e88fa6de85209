-- title: Refunds
-- description: Every refund with its order and customer; `status` keeps one status (pending, succeeded, failed), empty for all.
-- param status text = : pending, succeeded or failed; empty for every refund
SELECT r.id AS refund_id, r.order_id, o.user_id, r.payment_id, r.amount_cents, r.currency,
       r.status, r.reason
FROM refunds r
JOIN orders o ON o.id = r.order_id
WHERE $status = '' OR r.status = $status
ORDER BY r.id
