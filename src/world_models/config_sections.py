"""The config's sections: one frozen dataclass per stage, each checking its own values.

``config.Config`` holds one of each; presets and ``--set`` overrides replace fields.
"""

from __future__ import annotations

from dataclasses import dataclass

ENSEMBLE_MODES = ("sample", "pessimistic")
VAE_ENCODER_NORMS = ("none", "instance")
POOL_BACKENDS = ("local", "ray")


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class CollectConfig:
    # understeer: without a driver that misses bends, M learns that the road bends to
    # stay under a steering car, and the dream pays controllers that drive off
    # (docs/transfer.md, fourth pass).
    policies: tuple[str, ...] = ("brownian", "recovery", "aggressive", "understeer")
    episodes_per_policy: int = 8
    max_steps: int = 1000  # 0 means the environment's own step limit
    workers: int = 2
    seed: int = 0
    # Who plays every real episode (collection, the dream's real checks, the test):
    # local spawned processes, or Ray actors (docs/scale_out.md). ray_address "" is
    # ray.init()'s own choice (RAY_ADDRESS, else a local instance); HOST:PORT joins.
    backend: str = "local"
    ray_address: str = ""

    def __post_init__(self):
        require(
            len(self.policies) > 0, "collect.policies must name at least one policy"
        )
        require(
            self.backend in POOL_BACKENDS,
            f"collect.backend must be one of {', '.join(POOL_BACKENDS)}, "
            f"got {self.backend!r}",
        )
        require(
            self.backend == "ray" or not self.ray_address,
            "collect.ray_address is read only with collect.backend=ray",
        )
        require(self.episodes_per_policy > 0, "collect.episodes_per_policy must be > 0")
        require(self.max_steps >= 0, "collect.max_steps must be >= 0")
        require(self.workers > 0, "collect.workers must be > 0")


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 32
    batch_size: int = 100
    learning_rate: float = 1e-4
    steps: int = 2000
    kl_tolerance: float = 0.5  # free-bits floor: KL >= kl_tolerance * z_dim
    beta: float = 1.0
    beta_anneal_steps: int = 0  # linear ramp of beta from 0 over this many steps
    # Extra weight of the squared error on pixels that differ from the batch's median
    # frame (models/vae.salient_weights): small moving objects that a plain pixel loss
    # drops, such as LunarLander's lander (docs/worlds.md). 0: the paper's loss.
    salient_weight: float = 0.0
    # Frames that are one flat colour but for a few small objects (Pong) give the
    # paper's encoder almost no signal to pass on: its z hardly depends on the frame
    # (docs/worlds.md). "instance" rescales each layer's features per frame.
    encoder_norm: str = "none"
    val_fraction: float = 0.1
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        require(self.z_dim > 0, "vae.z_dim must be > 0")
        require(self.batch_size > 0, "vae.batch_size must be > 0")
        require(self.learning_rate > 0, "vae.learning_rate must be > 0")
        require(self.steps >= 0, "vae.steps must be >= 0")
        require(self.beta >= 0, "vae.beta must be >= 0")
        require(self.salient_weight >= 0, "vae.salient_weight must be >= 0")
        require(
            self.encoder_norm in VAE_ENCODER_NORMS,
            f"vae.encoder_norm must be one of {', '.join(VAE_ENCODER_NORMS)}",
        )
        require(0 <= self.val_fraction < 1, "vae.val_fraction must be in [0, 1)")
        require(self.eval_every > 0, "vae.eval_every must be > 0")
        require(self.checkpoint_every > 0, "vae.checkpoint_every must be > 0")


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = 256
    num_mixtures: int = 5
    batch_size: int = 100
    seq_len: int = 999
    learning_rate: float = 1e-3
    grad_clip: float = 1.0
    steps: int = 4000
    reward_weight: float = 1.0
    optimism_weight: float = 5.0  # weight of over-predicted reward in the reward loss
    # The reward head learns the mean reward of the next reward_window steps (1: the
    # step's own): see data.forward_mean_rewards
    reward_window: int = 10
    done_weight: float = 1.0
    # Weight of terminated steps in the termination BCE. Terminations are rare (at most
    # one per episode: CarRacing has hundreds of negatives per positive), so unweighted
    # M rarely pushes sigmoid(done_logit) past the dream's 0.5 threshold. A weight w
    # multiplies the predicted odds by w, so the dream ends once the true per-step
    # termination probability exceeds ~1/(1+w): ~9 % at 10. Larger weights (50+) end
    # dreams early wherever M is merely unsure.
    done_pos_weight: float = 10.0
    dropout: float = 0.0  # dropout on the h M's head reads, one mask per window
    # Prediction heads on the one LSTM (an ensemble sharing h, which C reads), each
    # trained on its own bootstrap weighting of the windows.
    heads: int = 1
    # Fraction of training windows whose tail, from a random step on, M reads its own
    # samples (at temperature open_loop_temperature) instead of the data's z, while
    # still scored on the data: M learns to follow reality from its own dreams' inputs.
    open_loop_fraction: float = 0.0
    open_loop_temperature: float = 0.5
    log_std_min: float = -7.0
    log_std_max: float = 3.0
    val_fraction: float = 0.1
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        require(self.hidden_size > 0, "rnn.hidden_size must be > 0")
        require(self.num_mixtures > 0, "rnn.num_mixtures must be > 0")
        require(self.batch_size > 0, "rnn.batch_size must be > 0")
        require(self.seq_len > 0, "rnn.seq_len must be > 0")
        require(self.learning_rate > 0, "rnn.learning_rate must be > 0")
        require(self.steps >= 0, "rnn.steps must be >= 0")
        require(self.optimism_weight > 0, "rnn.optimism_weight must be > 0")
        require(self.reward_window > 0, "rnn.reward_window must be > 0")
        require(self.done_pos_weight > 0, "rnn.done_pos_weight must be > 0")
        require(0 <= self.dropout < 1, "rnn.dropout must be in [0, 1)")
        require(self.heads > 0, "rnn.heads must be > 0")
        require(0 <= self.open_loop_fraction <= 1, "rnn.open_loop_fraction in [0, 1]")
        require(self.open_loop_temperature > 0, "rnn.open_loop_temperature must be > 0")
        require(self.log_std_min < self.log_std_max, "rnn.log_std_min < log_std_max")
        require(0 <= self.val_fraction < 1, "rnn.val_fraction must be in [0, 1)")
        require(self.eval_every > 0, "rnn.eval_every must be > 0")
        require(self.checkpoint_every > 0, "rnn.checkpoint_every must be > 0")


@dataclass(frozen=True)
class DreamConfig:
    controller: str = "linear"  # "linear" or "mlp"
    mlp_hidden: int = 32
    population: int = 64
    rollouts: int = 16
    # A candidate's fitness is the mean of its worst fraction of rollouts (1.0: all),
    # from generation `worst_from` on (before it, the plain mean)
    worst_fraction: float = 1.0
    worst_from: int = 0
    sigma0: float = 0.1
    generations: int = 200
    # Measured on CarRacing (docs/transfer.md): at 1.0 the dream brings the road back
    # under a car that left it, and controllers that drive off transfer; 0.5 does not.
    temperature: float = 0.5
    dropout: float = 0.0  # per-rollout dropout mask on the h M's head reads
    # The controller acts with N(0, action_noise²) added to each continuous action
    # (clipped to its range; discrete: a random action with this probability): in
    # reality always (checks, final check, test), in the dream if action_noise_in_dream.
    # On CarRacing its brake noise is a speed limit C never learns (docs/transfer.md).
    action_noise: float = 0.0
    action_noise_in_dream: bool = True
    # CarRacing: in reality the agent's gas is cut (before M steps on the action)
    # whenever the dashboard shows a speed above this; 0: never. A fixed rule on the
    # pixels, not learnt: the brake the dream never teaches (docs/transfer.md).
    speed_limit: float = 0.0
    # M's matmul inputs in the dream: "bfloat16" runs it 1.6-1.9x faster where the
    # hardware has bfloat16 GEMMs (AMX, GPUs); sums stay float32 (docs/benchmarks.md)
    matmul_dtype: str = "float32"
    # With rnn.heads > 1: "sample" plays each rollout in one head drawn at random;
    # "pessimistic" takes that head's next z, the lowest reward and highest done logit.
    ensemble: str = "sample"
    max_steps: int = 1000  # dream horizon; 0 means the environment's step limit
    # 0: dreams start at episode starts (h = 0); k > 0: also at every k-th real frame,
    # from M's state after reading the episode up to it (see dream.py)
    branch_every: int = 0
    real_eval_every: int = 25
    real_eval_episodes: int = 4
    # The search's best `finalists` real checks play again on one fresh block of
    # `final_check_episodes`, and the best there is kept: the best of many small
    # checks overstates its controller (docs/transfer.md). 0 keeps the best check.
    finalists: int = 0
    final_check_episodes: int = 16
    # Other action_noise levels the final check plays its winner at (every finalist,
    # with final_check_noise_all_finalists), on the same block; the agent then acts at
    # the best level (action_noise first among equals): reality sets the brake's speed
    # limit the dream got wrong (docs/transfer.md).
    final_check_noise: tuple[float, ...] = ()
    final_check_noise_all_finalists: bool = False
    # A search ends once `patience` real checks in a row missed its best (0: never),
    # and its final check runs there; under pipeline.warm_start_es the generations a
    # stalled round left go to the next (round k searches up to (k + 1) x generations).
    patience: int = 0
    chunk_size: int = 0  # candidates x rollouts per vmapped chunk; 0 = no chunking
    seed: int = 0

    def __post_init__(self):
        require(self.controller in ("linear", "mlp"), "dream.controller: linear | mlp")
        require(self.mlp_hidden > 0, "dream.mlp_hidden must be > 0")
        require(self.population >= 4, "dream.population must be >= 4")
        require(self.rollouts > 0, "dream.rollouts must be > 0")
        require(0 < self.worst_fraction <= 1, "dream.worst_fraction must be in (0, 1]")
        require(
            self.worst_from >= 0 and self.worst_from % self.real_eval_every == 0,
            "dream.worst_from must be a multiple of dream.real_eval_every",
        )
        require(self.sigma0 > 0, "dream.sigma0 must be > 0")
        require(self.generations >= 0, "dream.generations must be >= 0")
        require(self.temperature > 0, "dream.temperature must be > 0")
        require(0 <= self.dropout < 1, "dream.dropout must be in [0, 1)")
        require(0 <= self.action_noise < 1, "dream.action_noise must be in [0, 1)")
        require(self.speed_limit >= 0, "dream.speed_limit must be >= 0")
        require(
            self.matmul_dtype in ("float32", "bfloat16"),
            "dream.matmul_dtype must be float32 or bfloat16",
        )
        require(
            self.ensemble in ENSEMBLE_MODES,
            f"dream.ensemble must be one of {ENSEMBLE_MODES}",
        )
        require(self.max_steps >= 0, "dream.max_steps must be >= 0")
        require(self.branch_every >= 0, "dream.branch_every must be >= 0")
        require(self.real_eval_every > 0, "dream.real_eval_every must be > 0")
        require(self.real_eval_episodes > 0, "dream.real_eval_episodes must be > 0")
        require(self.finalists >= 0, "dream.finalists must be >= 0")
        require(self.patience >= 0, "dream.patience must be >= 0")
        require(self.final_check_episodes > 0, "dream.final_check_episodes must be > 0")
        require(
            all(0 <= level < 1 for level in self.final_check_noise),
            "dream.final_check_noise levels must be in [0, 1)",
        )
        require(
            self.finalists > 0 or not self.final_check_noise,
            "dream.final_check_noise needs a final check: set dream.finalists > 0",
        )
        require(self.final_check_noise or not self.final_check_noise_all_finalists,
                "dream.final_check_noise_all_finalists needs dream.final_check_noise")
        require(self.chunk_size >= 0, "dream.chunk_size must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 100
    seed: int = 10_000  # evaluation seeds never overlap the collection seeds
    workers: int = 2
    max_steps: int = 0  # 0 means the environment's step limit
    video: bool = True  # the pipeline records the agent's first test episode
    # Brownian and zero-controller baselines play the first of the test seeds (0: all)
    baseline_episodes: int = 0

    def __post_init__(self):
        require(self.episodes > 0, "eval.episodes must be > 0")
        require(
            0 <= self.baseline_episodes <= self.episodes,
            "eval.baseline_episodes must be in [0, eval.episodes]",
        )
        require(self.workers > 0, "eval.workers must be > 0")
        require(self.max_steps >= 0, "eval.max_steps must be >= 0")


@dataclass(frozen=True)
class PipelineConfig:
    rounds: int = 1
    on_policy_episodes: int = 8
    # Later rounds: the kept controller's own failures (no brake), a fresh M and a
    # fresh search; the only such recipe that rose (docs/transfer.md, twentieth pass).
    on_policy_noise: float = 0.0
    heuristic_policies_later_rounds: tuple[str, ...] = ("recovery",)
    retrain_vae: bool = False
    retrain_rnn: bool = True
    warm_start_es: bool = False
    freeze_lstm: bool = False  # later rounds train M's heads only: h keeps its meaning
    # Round 0 trains this many M's (seeds rnn.seed + c) and keeps the one whose dream's
    # controller plays best: M's seed has moved the test by ~450 (candidates.py)
    rnn_candidates: int = 1
    # Each M candidate runs this many searches (CMA-ES seeds dream.seed + s), chosen
    # among by the same final check (docs/transfer.md, thirteenth pass: 67 apart)
    search_candidates: int = 1
    # A later round keeps its agent only if it beats the previous round's on this many
    # shared episodes (pipeline/round_choice.py); 0 keeps every round's own.
    round_choice_episodes: int = 16

    @property
    def candidates(self) -> int:
        """How many searches round 0 runs and chooses among."""
        return self.rnn_candidates * self.search_candidates

    def __post_init__(self):
        require(self.rounds > 0, "pipeline.rounds must be > 0")
        # A continued search tells a new M by its checkpoint step; a fresh M of the
        # same length would pass for the old one. A new search each round re-scores.
        require(not (self.retrain_rnn and self.warm_start_es),
                "pipeline.retrain_rnn needs pipeline.warm_start_es=false (a continued "
                "search: set pipeline.retrain_rnn=false with it)")
        require(not (self.retrain_rnn and self.freeze_lstm),
                "pipeline.freeze_lstm keeps round 0's LSTM; it cannot retrain_rnn (set "
                "pipeline.retrain_rnn=false with it)")
        require(self.on_policy_episodes >= 0,
                "pipeline.on_policy_episodes must be >= 0")
        require(self.on_policy_noise >= 0, "pipeline.on_policy_noise must be >= 0")
        require(self.rnn_candidates > 0, "pipeline.rnn_candidates must be > 0")
        require(self.search_candidates > 0, "pipeline.search_candidates must be > 0")
        require(self.round_choice_episodes >= 0,
                "pipeline.round_choice_episodes must be >= 0")
