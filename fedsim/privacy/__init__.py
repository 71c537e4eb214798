"""Privacy and communication stages of the update pipeline: differential privacy (central,
local, DP-SGD) with its accountant, and update compression. Configured by the `privacy` and
`compression` sections, which expand into pipeline stages (`fedsim.privacy.stages.section_stages`);
they are not `pipeline` entries, so there is one way to configure each."""
