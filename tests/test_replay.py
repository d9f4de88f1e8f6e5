import numpy as np
import pytest

from compare.core.dqn import newest_frame
from compare.core.envs import VecEnv, resolve_env
from compare.core.learner import training_signal
from compare.core.protocols import get_protocol
from compare.core.replay import ReplayBuffer


def frame(v):
    return np.full((1, 2, 2), v, dtype=np.uint8)


def add_step(buf, value, action=0, reward=0.0, terminal=False, done=False, final=None):
    buf.add(frame(value), np.array([action]), np.array([reward], np.float32), np.array([terminal]),
            np.array([done]), frame(final if final is not None else 0))


def stack_values(stack):
    """(B, k, 2, 2) stacks -> (B, k) of the constant value of each frame."""
    return stack[:, :, 0, 0].tolist()


def test_stacks_do_not_cross_episode_boundaries():
    buf = ReplayBuffer(capacity=100, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                       frame_stack=4, seed=0)
    # Episode A: frames 1, 2 then game over; its last frame (3) is stored as the final entry.
    add_step(buf, 1, action=1, reward=1.0)
    add_step(buf, 2, action=2, reward=-1.0, terminal=True, done=True, final=3)
    # Episode B starts fresh.
    add_step(buf, 11, action=3)
    add_step(buf, 12)
    add_step(buf, 13)
    envs, idx = buf.valid_entries()
    batch = buf.transitions(envs, idx)
    got = {tuple(o): (tuple(n), a, r, t) for o, n, a, r, t in zip(
        map(tuple, stack_values(batch.obs)), map(tuple, stack_values(batch.next_obs)),
        batch.actions, batch.rewards, batch.terminals)}
    assert got == {
        (1, 1, 1, 1): ((1, 1, 1, 2), 1, 1.0, 0.0),
        (1, 1, 1, 2): ((1, 1, 2, 3), 2, -1.0, 1.0),       # next state is the stored final frame
        (11, 11, 11, 11): ((11, 11, 11, 12), 3, 0.0, 0.0),  # padded with B's first frame, not A's
        (11, 11, 11, 12): ((11, 11, 12, 13), 0, 0.0, 0.0),
    }  # the newest entry (13) has no successor yet and the final entry (3) is no transition


def test_ring_wraparound_never_samples_overwritten_history():
    buf = ReplayBuffer(capacity=6, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                       frame_stack=4, seed=0)
    for v in range(1, 10):  # one long episode of 9 steps in a ring of 6
        add_step(buf, v)
    envs, idx = buf.valid_entries()
    obs = stack_values(buf.transitions(envs, idx).obs)
    # Slots now hold frames 4..9; stacks need 3 predecessors, so only 7 and 8 start a
    # transition (9 is the newest and has no successor).
    assert sorted(obs) == [[4, 5, 6, 7], [5, 6, 7, 8]]
    batch = buf.sample(64)
    assert set(map(tuple, stack_values(batch.obs))) <= {(4, 5, 6, 7), (5, 6, 7, 8)}


def test_atari_transition_costs_one_frame():
    buf = ReplayBuffer(capacity=1000, num_envs=4, frame_shape=(84, 84), frame_dtype=np.uint8,
                       frame_stack=4, seed=0)
    assert buf.bytes_per_entry == 84 * 84 + 6
    assert buf.bytes_per_entry <= 7_500


def test_replay_rebuilds_exactly_the_observations_the_agent_saw():
    """Real Breakout episodes with resets: every sampled stack equals the env's own stack."""
    protocol = get_protocol("nature")
    env = VecEnv(resolve_env("Breakout"), protocol, num_envs=2)
    buf = ReplayBuffer(capacity=10_000, num_envs=2, frame_shape=(84, 84), frame_dtype=np.uint8,
                       frame_stack=4, seed=0)
    rng = np.random.default_rng(0)
    obs = env.reset(seed=3)
    seen: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    episodes = 0
    for _ in range(400):
        actions = rng.integers(env.n_actions, size=2)
        heads = buf.head.copy()
        out = env.step(actions)
        reward, terminal = training_signal(out, protocol)
        buf.add(newest_frame(obs, 4), actions, reward, terminal, out.done, out.final_frame)
        for e in range(2):
            # At an episode's end the env already shows the next episode; the true next
            # state is the old stack shifted by the final frame.
            nxt = (np.concatenate([obs[e][1:], out.final_frame[e][None]]) if out.done[e]
                   else out.obs[e])
            seen[(e, int(heads[e]))] = (obs[e], nxt)
        episodes += int(out.done.sum())
        obs = out.obs
    env.close()
    assert episodes >= 2  # the check below crossed real resets
    envs, idx = buf.valid_entries()
    batch = buf.transitions(envs, idx)
    assert len(envs) >= 780
    for i, (e, j) in enumerate(zip(envs, idx)):
        seen_obs, seen_next = seen[(int(e), int(j))]
        np.testing.assert_array_equal(batch.obs[i], seen_obs)
        np.testing.assert_array_equal(batch.next_obs[i], seen_next)


def test_state_roundtrip_resumes_sampling_stream():
    buf = ReplayBuffer(capacity=50, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                       frame_stack=4, seed=1)
    for v in range(20):
        add_step(buf, v)
    other = ReplayBuffer(capacity=50, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                         frame_stack=4, seed=99)
    other.load_state_dict(buf.state_dict(), buf.frame_chunks())
    np.testing.assert_array_equal(buf.sample(16).obs, other.sample(16).obs)


def test_wrong_shape_state_is_refused():
    a = ReplayBuffer(capacity=50, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                     frame_stack=4, seed=1)
    b = ReplayBuffer(capacity=60, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8,
                     frame_stack=4, seed=1)
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict(a.state_dict(), a.frame_chunks())


def test_a_checkpoint_writes_only_the_frame_chunks_changed_since_the_last(monkeypatch, tmp_path):
    from compare.core import replay as replay_module
    from compare.core.runstore import Run

    monkeypatch.setattr(replay_module, "CHUNK_BYTES", 4 * 5)  # 5 frames of 2x2 bytes per chunk
    buf = ReplayBuffer(capacity=30, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8, frame_stack=4, seed=1)
    for v in range(12):
        add_step(buf, v)
    first = buf.frame_chunks()
    assert sorted(first) == ["frames-e0-c0", "frames-e0-c1", "frames-e0-c2"]
    assert sum(len(f) for f in first.values()) == len(buf)  # filled slots only, never empty ones
    run = Run(tmp_path)
    files = run.save_replay(buf.state_dict(), first, {}, step=12)
    since = buf.written.copy()
    for v in range(12, 14):
        add_step(buf, v)
    assert sorted(buf.frame_chunks(since)) == ["frames-e0-c2"]  # entries 12, 13 (and what follows)
    files = run.save_replay(buf.state_dict(), buf.frame_chunks(since), files, step=14)
    run.prune_replay(14, files)
    assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == [
        "frames-e0-c0.s12.npy", "frames-e0-c1.s12.npy", "frames-e0-c2.s14.npy", "state.s14.npz"]
    since = buf.written.copy()
    for v in range(14, 40):  # past the ring's end: it wraps around
        add_step(buf, v)
    assert len(buf.frame_chunks(since)) == 6  # every chunk changed
    state, chunks, _ = run.load_replay(14)
    restored = ReplayBuffer(capacity=30, num_envs=1, frame_shape=(2, 2), frame_dtype=np.uint8, frame_stack=4,
                            seed=5)
    restored.load_state_dict(state, chunks)
    assert int(restored.written[0]) == 14
    assert restored.frames[0, :14, 0, 0].tolist() == list(range(14))  # frames from files of both saves


@pytest.mark.parametrize("frame_stack, num_envs", [(4, 2), (1, 3)])
def test_frames_kept_on_a_device_give_the_host_path_s_batches(frame_stack, num_envs):
    """The device path (the CPU standing in for a GPU) draws the same indices and gathers the
    same stacks as the host path, through episode ends, a wrapped ring and a checkpoint."""
    import torch

    buffers = [ReplayBuffer(capacity=40, num_envs=num_envs, frame_shape=(2, 2), frame_dtype=np.uint8,
                            frame_stack=frame_stack, seed=3, device=device) for device in (None, torch.device("cpu"))]
    rng = np.random.default_rng(0)
    for step in range(90):  # episodes of random length; the rings wrap twice
        done = rng.random(num_envs) < 0.1
        args = (np.full((num_envs, 2, 2), step % 250, np.uint8), rng.integers(0, 4, num_envs),
                rng.random(num_envs).astype(np.float32), done & (rng.random(num_envs) < 0.5), done,
                np.full((num_envs, 2, 2), 250, np.uint8))
        for buf in buffers:
            buf.add(*args)
        if step == 60:  # the device copy is rebuilt from a checkpoint's host arrays
            restored = ReplayBuffer(capacity=40, num_envs=num_envs, frame_shape=(2, 2), frame_dtype=np.uint8,
                                    frame_stack=frame_stack, seed=3, device=torch.device("cpu"))
            restored.load_state_dict(buffers[1].state_dict(), buffers[1].frame_chunks())
            buffers[1] = restored
        if step > 20:
            host, device = (buf.sample(16) for buf in buffers)
            assert isinstance(device.obs, torch.Tensor) and isinstance(device.next_obs, torch.Tensor)
            assert np.array_equal(host.obs, device.obs.numpy()) and np.array_equal(host.next_obs, device.next_obs.numpy())
            for key in ("actions", "rewards", "terminals"):
                assert np.array_equal(getattr(host, key), getattr(device, key)), key
