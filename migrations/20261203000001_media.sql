-- Real media: every stored shot is checked by technical QA before it is used, and a clip QA
-- rejects is a failed try of its own, so the next backend renders the shot within the budget
-- and through the same write-ahead protocol.
--
--   render_failure_class 'qa_rejected'   the provider delivered (and billed) a clip that no
--                                        transcode can make usable (README, "Technical QA")
--   render_task.qa                       the checks of the try's clip: name, measured value,
--                                        limit, pass, verdict

alter type render_failure_class add value if not exists 'qa_rejected';

alter table render_task add column qa jsonb;

comment on column render_task.qa is 'Technical QA of the clip this try delivered: {verdict, checks: [{name, value, limit, pass, verdict}]}. Null until the clip is checked, and for tries that delivered nothing.';
