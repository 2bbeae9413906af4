-- Every projected batch updates the balances of the accounts it touches. With room left on
-- each page, the new row version stays on its page (a HOT update: the primary key is not
-- touched, and the old version is pruned on the page); on a full page it moves to another and
-- the key gets a new entry. Batches that touch most accounts made 4% of the updates HOT at the
-- default fillfactor (100) and 98% at 70 (docs/benchmarks.md, the batch ledger API). Pages
-- written before this migration fill to 70% only once vacuum has freed them.
ALTER TABLE accounts SET (fillfactor = 70);
