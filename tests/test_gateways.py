"""EmpirioLabs, AIGateway, FluxRouter and any OpenAI-compatible endpoint, against their strict fakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from flux_klein_mcp.config import Settings
from flux_klein_mcp.errors import ConfigError
from flux_klein_mcp.providers import Providers
from flux_klein_mcp.server import create_server
from tests.conftest import error_text, output_files, provider_env, summary
from tests.fakes.core import Answer, FakeBase, Fault, mock_transport, png
from tests.fakes.images_api import AIGATEWAY, EMPIRIOLABS, FLUXROUTER, GENERIC, SPECS, FakeImagesAPI, oai_error

pytestmark = pytest.mark.anyio


def gateway(name: str, **kwargs) -> FakeImagesAPI:
    return FakeImagesAPI(SPECS[name], **kwargs)


def assert_failed(result, *phrases):
    assert result.is_error
    text = error_text(result)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    for spec in SPECS.values():
        assert spec.key not in text
    return text


# --- choosing a provider ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EMPIRIOLABS_API_KEY": "k"}, "empiriolabs"),
        ({"AIGATEWAY_API_KEY": "k"}, "aigateway"),
        ({"FLUX_API_KEY": "k"}, "fluxrouter"),
        ({"FLUX_KLEIN_API_KEY": "k", "FLUX_KLEIN_BASE_URL": "https://x.test/v1", "FLUX_KLEIN_MODEL": "m"},
         "openai-compatible"),
        ({"FLUX_API_KEY": "k", "AIGATEWAY_API_KEY": "k", "EMPIRIOLABS_API_KEY": "k"}, "empiriolabs"),
        ({"FLUX_API_KEY": "k", "OPENROUTER_API_KEY": "k"}, "openrouter"),
        ({"OPENROUTER_API_KEY": "k", "FLUX_KLEIN_PROVIDER": "fluxrouter", "FLUX_API_KEY": "k"}, "fluxrouter"),
        ({"FLUX_KLEIN_PROVIDER": "SANDBOX"}, "sandbox"),
    ],
)
def test_the_provider_is_chosen_by_setting_or_by_the_first_key_present(env, expected):
    assert Providers(Settings.from_env(env)).choose().name == expected


def test_a_call_can_choose_its_own_provider():
    providers = Providers(Settings.from_env({"OPENROUTER_API_KEY": "k", "AIGATEWAY_API_KEY": "k"}))
    assert providers.choose("aigateway").name == "aigateway"


@pytest.mark.parametrize(
    ("env", "requested", "phrases"),
    [
        ({}, None, ["OPENROUTER_API_KEY", "EMPIRIOLABS_API_KEY", "AIGATEWAY_API_KEY", "FLUX_API_KEY",
                    "FLUX_KLEIN_API_KEY", "sandbox"]),
        ({"OPENROUTER_API_KEY": "k"}, "fluxrouter", ["FLUX_API_KEY is not set", "provider argument"]),
        ({"FLUX_KLEIN_PROVIDER": "empiriolabs"}, None, ["EMPIRIOLABS_API_KEY is not set", "FLUX_KLEIN_PROVIDER"]),
        ({"FLUX_KLEIN_PROVIDER": "dall-e"}, None, ["FLUX_KLEIN_PROVIDER='dall-e' is not a provider"]),
        ({"FLUX_KLEIN_API_KEY": "k"}, None, ["FLUX_KLEIN_BASE_URL and FLUX_KLEIN_MODEL are not set"]),
    ],
)
def test_an_unusable_choice_says_which_variables_to_set(env, requested, phrases):
    with pytest.raises(ConfigError) as caught:
        Providers(Settings.from_env(env)).choose(requested)
    for phrase in phrases:
        assert phrase in str(caught.value)


async def test_with_nothing_configured_every_tool_lists_the_keys_and_the_sandbox(connect, fake, workdir):
    async with connect(OPENROUTER_API_KEY="") as client:
        for tool, args in (("generate_image", {"prompt": "x"}), ("edit_image", {"prompt": "x", "image": "a.png"}),
                           ("compose_images", {"prompt": "x", "images": ["a.png", "b.png"]})):
            assert_failed(await client.call_tool(tool, args), "EMPIRIOLABS_API_KEY", "FLUX_API_KEY", "sandbox")
    assert fake.requests == []


# --- what is sent --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("empiriolabs", {"aspect_ratio": "16:9", "seed": 5},
         {"model": "flux-2-klein-4b", "prompt": "a fox, aspect ratio 16:9", "aspect_ratio": "16:9", "seed": 5,
          "format": "png", "response_format": "b64_json", "sync": True}),
        ("empiriolabs", {"aspect_ratio": "21:9"},
         {"model": "flux-2-klein-4b", "prompt": "a fox, aspect ratio 21:9", "width": 1536, "height": 672,
          "format": "png", "response_format": "b64_json", "sync": True}),
        ("aigateway", {"aspect_ratio": "2:3"},
         {"model": "black-forest-labs/flux-2-klein-4b", "prompt": "a fox, aspect ratio 2:3", "size": "832x1248",
          "response_format": "b64_json"}),
        ("fluxrouter", {}, {"model": "flux-image", "prompt": "a fox", "size": "1024x1024"}),
        ("openai-compatible", {"aspect_ratio": "4:5"},
         {"model": "acme/flux-klein", "prompt": "a fox, aspect ratio 4:5", "size": "896x1152",
          "response_format": "b64_json"}),
    ],
)
async def test_payload_per_provider(connect, name, arguments, expected):
    fake = gateway(name)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", **arguments}))
    assert [r.json for r in fake.generations] == [expected]
    assert data["provider"] == name


@pytest.mark.parametrize(("name", "requests"), [("empiriolabs", 1), ("aigateway", 1), ("fluxrouter", 2),
                                                ("openai-compatible", 1)])
async def test_n_images_are_one_batch_where_the_provider_batches(connect, name, requests, workdir):
    fake = gateway(name)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
    assert len(fake.generations) == requests
    assert len(data["images"]) == 2 and len({i["path"] for i in data["images"]}) == 2
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 2


async def test_seeded_images_are_one_request_each_so_each_can_be_reproduced(connect):
    fake = gateway("empiriolabs")
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 3, "seed": 40}))
    assert sorted(r.json["seed"] for r in fake.generations) == [40, 41, 42]
    assert all("num_images" not in r.json for r in fake.generations)
    assert [i["seed"] for i in data["images"]] == [40, 41, 42]


async def test_a_seed_the_provider_cannot_take_is_not_sent_and_the_result_says_so(connect):
    fake = gateway("aigateway")
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "seed": 3}))
    assert "seed" not in fake.generations[0].json and data["images"][0]["seed"] is None
    assert any("does not take a seed" in note for note in data["notes"])


# --- URL replies ---------------------------------------------------------------------------------------------

async def test_an_https_url_reply_is_downloaded_at_once_without_the_key(connect, workdir):
    fake = gateway("fluxrouter")  # its URLs point at https://files.fake.test, another host
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "3:2"}))
    download = [r for r in fake.requests if "/files/" in r.path]
    assert len(download) == 1 and "authorization" not in download[0].headers
    assert Path(data["images"][0]["path"]).read_bytes() == next(iter(fake.files.values()))
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (1248, 832)


async def test_more_images_than_asked_for_are_never_downloaded(connect, workdir):
    fake = gateway("fluxrouter")
    fake.then(lambda incoming: fake.images_answer(incoming.json, fake.render({**incoming.json, "n": 6})))
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert len([r for r in fake.requests if "/files/" in r.path]) == 1 and len(data["images"]) == 1
    assert any("returned 6 images, more than the 1 asked for" in note for note in data["notes"])


async def test_a_url_on_the_providers_own_http_host_is_downloaded_too(connect, workdir):
    fake = gateway("aigateway")
    fake.then(lambda incoming: fake.images_answer({**incoming.json, "response_format": "url"},
                                                  fake.render(incoming.json)))
    async with connect(fake, loopback=True) as client:  # base URL http://127.0.0.1:port/v1
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert fake.count("/v1/files/img-1.png") == 1
    assert Path(data["images"][0]["path"]).read_bytes() == fake.files["img-1.png"]


async def test_an_expired_url_is_an_error_and_nothing_is_saved(connect, workdir):
    fake = gateway("fluxrouter")

    def expired(incoming):
        answer = fake.respond(incoming)
        fake.files.clear()
        return answer

    fake.then(expired)
    async with connect(fake, loopback=True) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "Downloading the image", "HTTP 404", "Nothing was saved")
    assert output_files(workdir) == []


async def test_a_plain_http_url_on_another_host_is_not_fetched(connect, workdir):
    fake = gateway("fluxrouter")
    fake.public_url = "http://169.254.169.254"  # e.g. a metadata service: never fetched
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "neither https:// nor on its own host", "not fetched")
    assert [r.path for r in fake.requests] == ["/v1/images/generations"]
    assert output_files(workdir) == []


# --- EmpirioLabs jobs ----------------------------------------------------------------------------------------

async def test_an_empiriolabs_job_is_polled_until_it_completes_with_progress(connect, sleeps):
    fake = gateway("empiriolabs")
    fake.force_jobs = True
    fake.job_polls = 3
    seen = []

    async def progress(done, total, message):
        seen.append((done, message))

    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}, progress_callback=progress))
    assert fake.count("/jobs/job-1") == 4 and len(data["images"]) == 1
    assert [m for _, m in seen].count("EmpirioLabs job processing") == 3
    assert sleeps.calls == [0.5, 1.0, 2.0]  # backs off between polls


async def test_a_job_status_the_server_does_not_know_is_never_repeated_in_progress(connect, sleeps):
    fake = gateway("empiriolabs")
    fake.force_jobs = True
    key = fake.spec.key
    fake.poll_script.extend([Answer.json(200, {"job_id": "job-1", "status": key[:20], "progress": 10 ** 400}),
                             Answer.json(200, {"job_id": "job-1", "status": "x" * 5, "progress": "NaN"})])
    seen = []

    async def progress(done, total, message):
        seen.append((done, message))

    async with connect(fake) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}, progress_callback=progress))
    messages = [m for _, m in seen]
    assert "EmpirioLabs job running" in messages and not any(key[:10] in m for m in messages)
    assert all(0 <= done <= 1 for done, _ in seen)


async def test_a_failed_empiriolabs_job_is_an_error(connect, workdir):
    fake = gateway("empiriolabs")
    fake.force_jobs = True
    fake.job_outcome = {"status": "failed", "error": {"message": "GPU out of memory"}}
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "job job-1 failed", "GPU out of memory")
    assert output_files(workdir) == []


async def test_an_empiriolabs_job_that_never_finishes_gives_up_at_the_timeout(connect, workdir):
    fake = gateway("empiriolabs")
    fake.force_jobs = True
    fake.job_polls = 10**9
    async with connect(fake, FLUX_KLEIN_TIMEOUT_S="0.5") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "did not finish within 0.5 s", "FLUX_KLEIN_TIMEOUT_S")
    assert output_files(workdir) == []


# --- editing and composing -----------------------------------------------------------------------------------

async def test_empiriolabs_edits_with_reference_images(connect, workdir):
    (workdir / "a.png").write_bytes(png(16, 16))
    fake = gateway("empiriolabs")
    async with connect(fake) as client:
        summary(await client.call_tool("compose_images", {"prompt": "both", "images": ["a.png", "https://x.test/b.png"]}))
    images = fake.generations[0].json["images"]
    assert images[0].startswith("data:image/png;base64,") and images[1] == "https://x.test/b.png"


@pytest.mark.parametrize("name", ["aigateway", "fluxrouter", "openai-compatible"])
async def test_a_provider_without_reference_images_refuses_edits_before_any_spend(connect, name, workdir):
    (workdir / "a.png").write_bytes(png(16, 16))
    fake = gateway(name)
    async with connect(fake) as client:
        result = await client.call_tool("edit_image", {"prompt": "blue", "image": "a.png"})
        assert_failed(result, "cannot edit images", "'openrouter'", "'empiriolabs'")
        result = await client.call_tool("compose_images", {"prompt": "x", "images": ["a.png", "a.png"]})
        assert_failed(result, "cannot compose images")
    assert fake.requests == []


async def test_the_high_tier_is_refused_on_a_gateway_before_any_spend(connect):
    fake = gateway("aigateway")
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "final", "tier": "high"})
    assert_failed(result, "tier 'high' is not offered by AIGateway", "'openrouter'")
    assert fake.requests == []


# --- the error policy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["empiriolabs", "aigateway", "fluxrouter"])
async def test_402_stops_and_names_the_billing_page(connect, name, workdir, sleeps):
    fake = gateway(name).then(oai_error(402, "Insufficient credits", code="insufficient_credits"))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "out of credits", "STOP", "dashboard")
    assert len(fake.generations) == 1 and sleeps.calls == [] and output_files(workdir) == []


async def test_insufficient_quota_is_treated_as_out_of_credits(connect):
    fake = gateway("openai-compatible").then(oai_error(429, "You exceeded your quota", code="insufficient_quota"))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "out of credits", "do not retry")
    assert len(fake.generations) == 1


@pytest.mark.parametrize("spec", [EMPIRIOLABS, AIGATEWAY, FLUXROUTER, GENERIC], ids=lambda s: s.name)
async def test_401_names_the_providers_key_variable(connect, spec, workdir):
    fake = FakeImagesAPI(spec)
    async with connect(fake, **{spec.key_variable: "sk-wrong-" + "x" * 30}) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    text = assert_failed(result, "rejected the API key", spec.key_variable)
    assert "xxxxxxxxxx" not in text
    assert len(fake.generations) == 1 and output_files(workdir) == []


async def test_429_waits_retry_after_and_retries_once(connect, sleeps):
    fake = gateway("aigateway").then(oai_error(429, "Too many requests", headers={"Retry-After": "2"}))
    async with connect(fake) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert sleeps.calls == [2.0] and len(fake.generations) == 2


@pytest.mark.parametrize(("status", "retried"), [(500, True), (503, True), (502, False), (504, False)])
async def test_server_errors_500_and_503_are_retried_once_with_backoff(connect, sleeps, workdir, status, retried):
    fake = gateway("aigateway").then(oai_error(status, "upstream trouble", kind="server_error"))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert result.is_error != retried
    assert len(fake.generations) == (2 if retried else 1)
    assert sleeps.calls == ([2.0] if retried else [])


async def test_server_error_twice_is_reported_after_two_requests(connect, workdir):
    fake = gateway("empiriolabs").then(oai_error(503, "busy"), oai_error(503, "busy"))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "HTTP 503", "failed again after one retry")
    assert len(fake.generations) == 2 and output_files(workdir) == []


async def test_a_moderation_error_reports_its_reason(connect):
    fake = gateway("openai-compatible").then(
        oai_error(400, "Your request was rejected by the safety system: violence", code="content_policy_violation"))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "moderation refused", "safety system: violence", "Rephrase")
    assert len(fake.generations) == 1


@pytest.mark.parametrize("fault", [Fault.RESET, Fault.TRUNCATE])
async def test_a_broken_connection_is_an_error(connect, fault, workdir):
    fake = gateway("aigateway").then(fault)
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert_failed(result, "broke before its answer was complete")
    assert output_files(workdir) == []


# --- cost ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "kwargs", "cost", "note"),
    [
        ("empiriolabs", {}, 0.017, None),
        ("fluxrouter", {"cost_usd": "0.0123"}, 0.0246, None),
        ("fluxrouter", {}, None, "cost_usd is null"),
        ("aigateway", {}, None, "cost_usd is null"),
    ],
)
async def test_cost_comes_from_the_price_list_or_the_provider_or_is_null_with_a_note(connect, name, kwargs, cost,
                                                                                        note):
    fake = gateway(name, **kwargs)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
    assert data["cost_usd"] == cost
    if note:
        assert any(note in n for n in data["notes"])



@pytest.mark.parametrize("fault", [oai_error(429, "slow down"), oai_error(503, "busy")], ids=["429", "503"])
async def test_a_passing_fault_while_polling_a_job_polls_again_and_never_pays_twice(connect, fault):
    fake = gateway("empiriolabs")
    fake.force_jobs = True
    fake.job_polls = 1
    fake.poll_script.append(fault)  # the first look at the job fails in passing
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert len(fake.generations) == 1  # one job, one charge
    assert fake.count("/v1/jobs/job-1") == 3 and len(data["images"]) == 1


async def test_a_redirected_image_url_is_followed_and_the_key_stays_home(connect, workdir):
    class Redirector(FakeBase):
        def scripted_paths(self):
            return ()

        def respond(self, incoming):
            target = "https://files.fake.test" + incoming.path.replace("/r/", "/v1/files/")
            return Answer(302, b"", {"Location": target})

    fake, redirector = gateway("fluxrouter"), Redirector()
    fake.public_url = "https://signed.fake.test"  # the reply's URL, which redirects to files.fake.test

    def via_signed_host(incoming):
        answer = fake.respond(incoming)
        answer.body = answer.body.replace(b"https://signed.fake.test/v1/files/", b"https://signed.fake.test/r/")
        return answer

    fake.then(via_signed_host)
    transport = mock_transport({"fluxrouter.test": fake, "signed.fake.test": redirector, "files.fake.test": fake})


    settings = Settings.from_env(provider_env(fake), cwd=workdir)
    async with Client(create_server(settings, transport=transport)) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert [r.path for r in redirector.requests] == ["/r/img-1.png"]
    assert all("authorization" not in r.headers for r in redirector.requests)
    assert Path(data["images"][0]["path"]).read_bytes() == fake.files["img-1.png"]


async def test_a_damaged_image_in_a_batch_keeps_those_before_it_and_leaves_no_file_of_the_rest(connect, workdir):
    """The images of one reply are written at once and named in order once each decodes: the first that does
    not stops the rest, and nothing of them (nor a temporary file) is left."""
    fake = gateway("openai-compatible")

    def third_damaged(incoming):
        body = incoming.json
        images = fake.render(body)
        images[2] = images[2][: len(images[2]) // 2]
        return fake.images_answer(body, images)

    fake.then(third_damaged)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 4}))
    assert len(data["images"]) == 2 and "not a usable image" in data["failed"][0]
    names = sorted(p.name for p in output_files(workdir))
    assert len(names) == 4 and all(name.endswith(("-1.png", "-1.json", "-2.png", "-2.json")) for name in names)
